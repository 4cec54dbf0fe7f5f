/* tfvars: an I/O-free parser of Terraform's variable-definitions syntax
 * (terraform.tfvars) into a tree of values. Bytes in, tree or error out; the
 * input need not be NUL-terminated and is never read past its length.
 *
 * Supported: `name = value` lines; double-quoted strings with the escapes
 * \n \t \r \" \\ \uXXXX \UXXXXXXXX (and $${ / %%{ for literal ${ / %{);
 * heredocs (<<EOF and <<-EOF); numbers (integer, decimal, negative,
 * exponent); true, false, null; lists [ ... ] and maps { k = v, "k" : v }
 * spanning lines with trailing commas; comments #, // and slash-star.
 * Not supported, as in a real tfvars file: variables, function calls,
 * template interpolation, blocks. */
#ifndef WSGATE_CONFIG_TFVARS_H
#define WSGATE_CONFIG_TFVARS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Lists and maps nested deeper than this are rejected, so a hostile file
 * cannot exhaust the stack of the recursive parser. */
#define TFV_MAX_DEPTH 64

typedef enum tfv_type {
    TFV_NULL,
    TFV_BOOL,
    TFV_NUMBER,
    TFV_STRING,
    TFV_LIST,
    TFV_MAP,
} tfv_type;

typedef struct tfv_value tfv_value;
struct tfv_value {
    tfv_type type;
    int line; /* 1-based position of the value's first byte */
    int column;
    bool boolean;    /* TFV_BOOL */
    double number;   /* TFV_NUMBER */
    bool is_integer; /* TFV_NUMBER: the value is whole and fits int64 */
    int64_t integer; /* TFV_NUMBER when is_integer */
    char *string;    /* TFV_STRING: decoded UTF-8, NUL-terminated, no NUL inside */
    size_t string_len;
    size_t count;      /* TFV_LIST / TFV_MAP: number of elements */
    tfv_value **items; /* TFV_LIST elements, or TFV_MAP values */
    char **keys;       /* TFV_MAP keys, parallel to items (unique) */
};

typedef struct tfv_attr {
    char *name;
    int line;
    int column;
    tfv_value *value;
} tfv_attr;

/* A parsed file: its assignments in file order, names unique. */
typedef struct tfv_doc {
    tfv_attr *attrs;
    size_t count;
} tfv_doc;

/* Parse a whole tfvars document of len bytes. Returns a new document (the
 * caller frees it with tfv_doc_free) or NULL with *err filled (err may be
 * NULL): WSG_E_CONFIG_SYNTAX, the line and column (1-based) and a message
 * without the position in it. Duplicate names, blocks and anything not a literal are errors. */
tfv_doc *tfv_parse(const char *text, size_t len, wsg_error *err);

/* Release a document from tfv_parse (NULL is fine). */
void tfv_doc_free(tfv_doc *doc);

/* Return the assignment named `name` in doc, or NULL. */
const tfv_attr *tfv_doc_find(const tfv_doc *doc, const char *name);

/* Parse text as exactly one value (whitespace and comments around it
 * allowed), as for TF_VAR_<name> and --set values. Returns a new value (free
 * with tfv_value_free) or NULL with *err filled (err may be NULL). */
tfv_value *tfv_parse_value(const char *text, size_t len, wsg_error *err);

/* Return a new TFV_STRING value holding a copy of s[0..len) taken verbatim
 * (no escapes), at line 0, for raw TF_VAR_/--set text. Never fails. */
tfv_value *tfv_string_new(const char *s, size_t len);

/* Release a value and everything under it (NULL is fine). */
void tfv_value_free(tfv_value *v);

/* Return the Terraform-style name of a type: "string", "number", ... */
const char *tfv_type_name(tfv_type type);

#endif
