/*
 * The standalone `dstack-verify` program; `wgctl verify` runs the same
 * dstack_verify_main() (ratls/dstack_verify.c).
 */


int dstack_verify_main(int argc, char **argv);


int
main(int argc, char **argv)
{
    return dstack_verify_main(argc, argv);
}
