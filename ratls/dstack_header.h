/*
 * Request header names as a backend reads them, for the nginx modules
 * that strip the x-dstack-* headers a caller must not choose (the auth
 * module's X-Dstack-App-Id, the mesh's routing headers).  Plain C, no
 * nginx headers; each module compiles its own (hidden) copy.
 *
 * A name is folded the way backends fold it: letters to lower case and
 * "_" to "-" (underscores_in_headers lets x_dstack_app_id through, and
 * nginx's $http_* variables and CGI-style backends read it as the real
 * one).  A name with any other character (ignore_invalid_headers off)
 * that still spells x-dstack in its letters and digits cannot be
 * classified safely.
 */

#ifndef _DSTACK_HEADER_H_INCLUDED_
#define _DSTACK_HEADER_H_INCLUDED_


#include <stddef.h>


#pragma GCC visibility push(hidden)


/* what dstack_header_fold() found */
#define DSTACK_HEADER_OTHER      0   /* not an x-dstack-... name */
#define DSTACK_HEADER_DSTACK     1   /* x-dstack-..., folded */
#define DSTACK_HEADER_UNCLEAR    2   /* x-dstack with other characters */

/* room for the longest name a module compares */
#define DSTACK_HEADER_FOLD_LEN   32


/*
 * a character as folded: letters in lower case, "_" as "-", digits and
 * "-" as they are, anything else 0; filled by dstack_header_init()
 */
extern unsigned char  dstack_header_fold_table[256];

/* 1 for a first character that dstack_header_maybe() looks further at */
extern unsigned char  dstack_header_first_table[256];


void dstack_header_init(void);

/*
 * DSTACK_HEADER_DSTACK: the name spells x-dstack... with letters, digits,
 * "-" and "_" only; its first DSTACK_HEADER_FOLD_LEN characters, folded,
 * are in "folded" (compare only names no longer than that).
 */
int dstack_header_fold(const unsigned char *name, size_t len,
    unsigned char *folded);


/*
 * Whether a name needs dstack_header_fold() at all: most names start with
 * a letter or digit other than "x" and stop here.
 */

static inline int
dstack_header_maybe(const unsigned char *name, size_t len)
{
    return len == 0 || dstack_header_first_table[name[0]];
}


#pragma GCC visibility pop


#endif /* _DSTACK_HEADER_H_INCLUDED_ */
