/* Deadlock detection on the lock table's wait-for graph: a depth-first search from the blockers of
 * a request about to queue, looking for a path back to the requester.
 *
 * Edges: a waiting client -> every other client that holds an incompatible lock on the resource it
 * waits for, or waits ahead of it in an incompatible mode.  Only the new request's out-edges need
 * searching: a request appended at the tail has no in-edges, and an upgrade inserted at the head
 * only adds edges from waiters that already reach the upgrader (the queue behind a shared holder is
 * headed by an exclusive request blocked by that holder).  Waiters whose wait has ended are not in
 * the graph: the wait purge that starts every command removed them before the search. */
#include <stdlib.h>
#include <string.h>

#include "roles/lock/lock_internal.h"

struct frame {
    const struct ds_lock_client *c; /* NULL: the requester's hypothetical request */
    size_t wi;                      /* index of the current wait in c->waits */
    struct ds_lock_res *r;          /* resource of the current wait */
    size_t qi;                      /* queue index of the waiting request on r */
    uint8_t mode;                   /* its mode */
    const char *name;               /* the waiting client */
    size_t pos;                     /* next holder (< nh) or waiter ahead (nh + i) to look at */
};

static void load_wait(struct frame *f)
{
    f->r = f->c->waits[f->wi];
    f->qi = ds_lock_waiter_find(f->r, f->c->name);
    f->mode = f->r->w[f->qi].mode;
    f->pos = 0;
}

/* The next client that blocks f's current wait, moving through the client's waits in name order;
 * NULL when there is none left.  On return f->r is the resource of the returned edge. */
static const char *next_blocker(struct frame *f)
{
    for (;;) {
        const struct ds_lock_res *r = f->r;
        while (f->pos < r->nh + f->qi) {
            size_t p = f->pos++;
            const char *who = p < r->nh ? r->h[p].client : r->w[p - r->nh].client;
            uint8_t m = p < r->nh ? r->h[p].mode : r->w[p - r->nh].mode;
            int compatible = m == DS_LOCK_SHARED && f->mode == DS_LOCK_SHARED;
            if (!compatible && strcmp(who, f->name) != 0)
                return who;
        }
        if (!f->c || ++f->wi == f->c->nwaits)
            return NULL;
        load_wait(f);
    }
}

static int report(const struct frame *st, size_t depth, struct ds_lock_list *cycle)
{
    for (size_t i = 0; i < depth; i++) {
        struct ds_lock_entry e = { st[i].r->name, (char *)st[i].name, st[i].mode, 0, 0, 0, 0, 0 };
        int rv = ds_lock_list_push(cycle, &e);
        if (rv)
            return rv;
    }
    return 0;
}

static int push(struct frame **st, size_t depth, size_t *cap)
{
    if (depth < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 8;
    struct frame *v = realloc(*st, c * sizeof(*v));
    if (!v)
        return DS_LOCK_ENOMEM;
    *st = v;
    *cap = c;
    return 0;
}

int ds_lock_find_cycle(struct ds_lock_table *t, struct ds_lock_res *r, size_t at,
                       const char *client, uint8_t mode, struct ds_lock_list *cycle, int *found)
{
    struct frame *st = NULL;
    size_t depth = 0, cap = 0;
    uint64_t search = ++t->search;
    int rv = push(&st, depth, &cap);
    *found = 0;
    if (rv)
        return rv;
    st[depth++] = (struct frame){ NULL, 0, r, at, mode, client, 0 };
    while (depth > 0) {
        const char *b = next_blocker(&st[depth - 1]);
        if (!b) {
            depth--;
            continue;
        }
        if (strcmp(b, client) == 0) {
            *found = 1;
            rv = report(st, depth, cycle);
            break;
        }
        struct ds_lock_client *bc = ds_lock_map_get(&t->clients, b, strlen(b));
        if (!bc || bc->nwaits == 0 || bc->mark == search)
            continue;
        bc->mark = search;
        rv = push(&st, depth, &cap);
        if (rv)
            break;
        st[depth] = (struct frame){ bc, 0, NULL, 0, 0, bc->name, 0 };
        load_wait(&st[depth++]);
    }
    free(st);
    return rv;
}
