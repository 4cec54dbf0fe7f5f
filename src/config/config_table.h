/* Internal to src/config: the variable table's row type, the table itself
 * (config_table.c) and typed access to a variable's field in struct
 * config. config.c loads and validates through it, config_print.c prints
 * (dump, help, JSON). */
#ifndef WSGATE_CONFIG_TABLE_H
#define WSGATE_CONFIG_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"

typedef enum cv_type {
    CV_STRING,
    CV_INT,
    CV_BOOL,
    CV_STRLIST,
    CV_STRMAP,
    CV_OBJMAP, /* map of objects whose members are all whole numbers */
} cv_type;

enum {
    CV_NO_EFFECT = 1u << 0,  /* an AWS knob: accepted and validated only */
    CV_SECRET = 1u << 1,     /* masked by config_dump */
    CV_URL_SECRET = 1u << 2, /* URLs (a string or a list): their password is masked */
};

/* One member of a CV_OBJMAP entry: a whole number stored as int64_t at
 * `offset` in the entry's struct, within min..max. Every member is
 * required. */
typedef struct cv_member {
    const char *name;
    size_t offset;
    int64_t min, max;
    const char *rule; /* the message when the value is out of range */
} cv_member;

/* One variable: everything defaults, parsing, validation, dump and help
 * need, so adding a variable is adding one row. */
typedef struct config_var {
    const char *name;
    cv_type type;
    size_t offset;       /* of the value in struct config */
    size_t count_offset; /* CV_STRLIST / CV_STRMAP: of the size_t count */
    const char *def_str;
    int64_t def_int;
    bool def_bool;
    const char *const *def_list; /* NULL-terminated */
    bool ranged;
    int64_t min, max;
    const char *const *one_of; /* NULL-terminated allowed strings */
    size_t enum_offset;        /* with one_of: of the int that gets the value's index (0: none) */
    const int64_t *int_set;    /* allowed integers, int_set_len of them */
    size_t int_set_len;
    const char *charset; /* allowed bytes, "a-z0-9-" style; implies non-empty */
    bool nonempty;
    size_t max_len;     /* strings, list items, map values; 0 = none */
    size_t max_items;   /* lists and maps; 0 = none */
    size_t max_key_len; /* maps */
    bool (*check)(const char *s);
    const cv_member *members; /* CV_OBJMAP: NULL-name-terminated */
    size_t elem_size;         /* CV_OBJMAP: size of one entry's struct */
    size_t key_offset;        /* CV_OBJMAP: of the entry's char *key in it */
    const char *key_noun;     /* CV_OBJMAP: what a key names, for messages ("route") */
    unsigned flags;
    const char *help;
    const char *rule;      /* the message when validation fails */
    const char *item_rule; /* the message when a list item or map entry fails */
} config_var;

/* The variables, in the order help and dump print them. */
extern const config_var config_vars[];
extern const size_t config_nvars;

/* Return the variable named name[0..len), or NULL. */
const config_var *config_find_var(const char *name, size_t len);

static inline char **str_field(config *cfg, const config_var *v) {
    return (char **)((char *)cfg + v->offset);
}
static inline int64_t *int_field(config *cfg, const config_var *v) {
    return (int64_t *)((char *)cfg + v->offset);
}
static inline bool *bool_field(config *cfg, const config_var *v) {
    return (bool *)((char *)cfg + v->offset);
}
static inline char ***list_field(config *cfg, const config_var *v) {
    return (char ***)((char *)cfg + v->offset);
}
static inline config_kv **map_field(config *cfg, const config_var *v) {
    return (config_kv **)((char *)cfg + v->offset);
}
static inline size_t *count_field(config *cfg, const config_var *v) {
    return (size_t *)((char *)cfg + v->count_offset);
}

/* CV_OBJMAP: the array of entries is a typed pointer in struct config (e.g.
 * config_route_throttle *); it is read and written through memcpy so no
 * lvalue of another pointer type touches it. */
static inline char *objmap_get(config *cfg, const config_var *v) {
    void *p;
    memcpy(&p, (char *)cfg + v->offset, sizeof p);
    return p;
}
static inline void objmap_set(config *cfg, const config_var *v, void *p) {
    memcpy((char *)cfg + v->offset, &p, sizeof p);
}
static inline char *entry_key(const config_var *v, char *entry) {
    char *k;
    memcpy(&k, entry + v->key_offset, sizeof k);
    return k;
}
static inline void entry_set_key(const config_var *v, char *entry, char *k) {
    memcpy(entry + v->key_offset, &k, sizeof k);
}
static inline int64_t *entry_member(char *entry, const cv_member *m) {
    return (int64_t *)(entry + m->offset);
}

#endif
