/* The live registry, standing in for the seed's DynamoDB connections table
 * and its UserIndex and RoomIndex: every open connection's session, indexed
 * by connection id, by user and by room. Add, move and remove are O(1); a
 * room's members and a user's connections are intrusive lists, so a
 * broadcast walks exactly the recipients. Each worker has its own (its
 * hub's) and only its thread touches it. */
#ifndef WSGATE_APP_REGISTRY_H
#define WSGATE_APP_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "common/keytab.h"
#include "common/slab.h"
#include "engine/directory.h"
#include "net/conn.h"
#include "throttle/throttle.h"

typedef struct session session;

/* User ids shorter than this live inside the session (no block of their
 * own); longer ones in a block the session owns. */
#define REGISTRY_SHORT_ID 16

typedef struct room {
    session *members;  /* list through session.room_next */
    size_t count;      /* members on this worker */
    void *engine_room; /* the engine's handle (engine_room_joined), while count > 0 */
    char id[];         /* also the rooms map's key */
} room;

/* A user has no entry of its own: the users table points at the session
 * of its newest connection, the head of the list of its connections
 * (through user_next), and every session carries the user id. A user with
 * one connection costs nothing beyond its table slot (issue 16, item 4). */
struct session {
    /* The engine's record of this connection (engine_conn_opened). Its
     * connection, user id and username are the session's too: c, user_id
     * and username below name the same memory, not copies. */
    union {
        directory_conn record;
        struct {
            conn *c;
            const char *user_id;  /* uid, or an owned block when too long */
            const char *username; /* owned, or user_id itself when the same
                                   * text (the default: no copy) */
        };
    };
    room *room; /* NULL: in no room */
    session *room_prev, *room_next;
    session *user_prev, *user_next; /* the user's connections, newest first */
    throttle_conn_bucket bucket;    /* the connection's message rate */
    throttle_conn_bucket presence;  /* its presence bucket (app/presence_limit.h) */
    bool resuming;                  /* stored messages are being replayed: live chat
                                     * for its room waits in the store's order */
    uint16_t store_reads;           /* history and replay reads in flight (handlers.c);
                                     * beside resuming, in its padding */
    /* Which replay is current (compared for equality with a read's tag; 32
     * bits, in the padding beside resuming: 112 bytes, not 128). */
    uint32_t resume_gen;
    char uid[REGISTRY_SHORT_ID]; /* the user id when shorter than this */
};

typedef struct registry {
    /* Tables of values keyed by the id inside them (8 bytes a slot, no
     * key copies): by_id the connection's id, users and rooms their own. */
    keytab by_id;  /* connection id -> session */
    keytab users;  /* user id -> the session of its newest connection */
    keytab rooms;  /* room id -> room (only rooms with members) */
    slab sessions; /* where the sessions live (no malloc block each) */
} registry;

/* Initialise an empty registry. */
void registry_init(registry *r);
/* Free the registry's indexes and every session still in it. */
void registry_free(registry *r);

/* Create a session for c with copies of user_id and username (none for a
 * username equal to the id), index it by connection id and user (in no
 * room yet). Returns it, owned by r. */
session *registry_add(registry *r, conn *c, const char *user_id, const char *username);

/* Move s into room room_id (creating the room entry on first member),
 * leaving its old room. Returns the new room. */
room *registry_join(registry *r, session *s, const char *room_id);

/* Take s out of its room (no effect if in none). An emptied room entry is
 * freed. */
void registry_leave(registry *r, session *s);

/* Remove s from every index and free it. */
void registry_remove(registry *r, session *s);

/* Return the session of connection id, the newest connection of a user
 * (the others follow through user_next), or a room with members; NULL when
 * absent. */
session *registry_by_id(const registry *r, const char *conn_id);
session *registry_user(const registry *r, const char *user_id);
room *registry_room(const registry *r, const char *room_id);

/* Return whether s is its user's only connection on this registry. */
static inline bool registry_user_alone(const session *s) { return !s->user_prev && !s->user_next; }

/* Fill *out with a malloc'd array of the rooms that have members, sorted by
 * id (caller frees the array, not the rooms). Returns the count. */
size_t registry_rooms_sorted(const registry *r, room ***out);

#endif
