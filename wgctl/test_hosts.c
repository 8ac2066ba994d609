/*
 * wgctl unit tests: the managed block of a hosts file.
 */


#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "test.h"
#include "hosts.h"


static char *test_render(const char *old, const wg_host_t *hosts, size_t n,
    char *err, size_t errlen);
static char *test_slurp(const char *path);


static char *
test_render(const char *old, const wg_host_t *hosts, size_t n, char *err,
    size_t errlen)
{
    char    *out;
    size_t   len;

    err[0] = '\0';

    if (wg_hosts_render(old, strlen(old), hosts, n, &out, &len, err, errlen)
        != 0)
    {
        return NULL;
    }

    return out;
}


static char *
test_slurp(const char *path)
{
    FILE    *f;
    char    *buf;
    size_t   n;

    f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }

    buf = calloc(1, 65536);
    n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);

    return buf;
}


void
test_hosts(void)
{
    int           rc;
    char          err[256], dir[] = "/tmp/wgctl-hosts-XXXXXX", path[64];
    char         *out, *text;
    struct stat   st;
    wg_host_t     two[] = { { "db-1", "100.64.0.2" }, { "web", "fd7a::5" } };
    wg_host_t     one[] = { { "db-1", "100.64.0.9" } };
    wg_host_t     badname[] = { { "Bad_Name", "100.64.0.2" } };
    wg_host_t     badip[] = { { "ok", "100.64.0.256" } };
    wg_host_t     dup[] = { { "a", "100.64.0.1" }, { "a", "100.64.0.2" } };

    ok(wg_hosts_name_valid("db-1") && wg_hosts_name_valid("a")
       && !wg_hosts_name_valid("-a") && !wg_hosts_name_valid("a-")
       && !wg_hosts_name_valid("A") && !wg_hosts_name_valid("a.b")
       && !wg_hosts_name_valid("")
       && !wg_hosts_name_valid("a b")
       && wg_hosts_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                              "aaaaaaaaaaaaaaaaa")
       && !wg_hosts_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaa"),
       "host names validated");

    out = test_render("127.0.0.1 localhost\n::1 localhost\n", two, 2, err,
                      sizeof(err));
    ok(out != NULL && strcmp(out, "127.0.0.1 localhost\n::1 localhost\n"
                                  "# BEGIN dstack-vpc\n"
                                  "100.64.0.2 db-1.dstack.internal db-1\n"
                                  "fd7a::5 web.dstack.internal web\n"
                                  "# END dstack-vpc\n") == 0,
       "block appended to a file without one");

    text = out;
    out = test_render(text, one, 1, err, sizeof(err));
    ok(out != NULL && strcmp(out, "127.0.0.1 localhost\n::1 localhost\n"
                                  "# BEGIN dstack-vpc\n"
                                  "100.64.0.9 db-1.dstack.internal db-1\n"
                                  "# END dstack-vpc\n") == 0,
       "block replaced");
    free(text);
    free(out);

    out = test_render("1.1.1.1 a\n# BEGIN dstack-vpc\r\nold\n"
                      "# END dstack-vpc  \n2.2.2.2 b # tail\n3.3.3.3 c",
                      one, 1, err, sizeof(err));
    ok(out != NULL && strcmp(out, "1.1.1.1 a\n# BEGIN dstack-vpc\n"
                                  "100.64.0.9 db-1.dstack.internal db-1\n"
                                  "# END dstack-vpc\n2.2.2.2 b # tail\n"
                                  "3.3.3.3 c\n") == 0,
       "block replaced in place, other lines untouched");
    free(out);

    out = test_render("1.1.1.1 a\n# BEGIN dstack-vpc\nold\n"
                      "# END dstack-vpc\n2.2.2.2 b\n", NULL, 0, err,
                      sizeof(err));
    ok(out != NULL && strcmp(out, "1.1.1.1 a\n2.2.2.2 b\n") == 0,
       "no hosts: block removed");
    free(out);

    out = test_render("# BEGIN dstack-vpc\nx\n", one, 1, err, sizeof(err));
    ok(out == NULL && strstr(err, "without") != NULL,
       "BEGIN without END refused: %s", err);

    out = test_render("# END dstack-vpc\n", one, 1, err, sizeof(err));
    ok(out == NULL, "END without BEGIN refused: %s", err);

    out = test_render("# BEGIN dstack-vpc\n# END dstack-vpc\n"
                      "# BEGIN dstack-vpc\n# END dstack-vpc\n", one, 1, err,
                      sizeof(err));
    ok(out == NULL, "two blocks refused: %s", err);

    out = test_render("", badname, 1, err, sizeof(err));
    ok(out == NULL && strstr(err, "\"Bad_Name\"") != NULL,
       "bad name refused: %s", err);

    out = test_render("", badip, 1, err, sizeof(err));
    ok(out == NULL && strstr(err, "\"100.64.0.256\"") != NULL,
       "bad address refused: %s", err);

    out = test_render("", dup, 2, err, sizeof(err));
    ok(out == NULL, "duplicate name refused: %s", err);

    /* the file: atomic replace, mode kept, unchanged not rewritten */
    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp");
        return;
    }

    snprintf(path, sizeof(path), "%s/hosts", dir);
    text = NULL;

    rc = wg_hosts_update(path, two, 2, err, sizeof(err));
    ok(rc == 1 && stat(path, &st) == 0 && (st.st_mode & 0777) == 0644,
       "missing file created 0644");

    chmod(path, 0640);
    stat(path, &st);

    rc = wg_hosts_update(path, two, 2, err, sizeof(err));
    ok(rc == 0, "unchanged file not rewritten");

    rc = wg_hosts_update(path, one, 1, err, sizeof(err));
    text = test_slurp(path);
    ok(rc == 1 && text != NULL
       && strstr(text, "100.64.0.9 db-1.dstack.internal db-1\n") != NULL
       && strstr(text, "web") == NULL, "file rewritten");

    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640,
       "mode kept across the rename");
    free(text);

    rc = wg_hosts_update(path, badname, 1, err, sizeof(err));
    text = test_slurp(path);
    ok(rc < 0 && text != NULL && strstr(text, "db-1") != NULL,
       "a refused update leaves the file as it was");
    free(text);

    rc = wg_hosts_update(path, NULL, 0, err, sizeof(err));
    text = test_slurp(path);
    ok(rc == 1 && text != NULL && text[0] == '\0', "block removed from file");
    free(text);

    unlink(path);
    rmdir(dir);
}
