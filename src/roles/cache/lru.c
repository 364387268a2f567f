/* LRU replacement policy for the cache lines of one node (struct ds_mesi_policy implementation). */
#include "roles/cache/mesi.h"

#include <stddef.h>

#define LRU_OF(p) ((struct ds_mesi_lru *)(void *)(p))

static void lru_unlink(struct ds_mesi_lru_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

/* Most recently used lines sit right after the head; the victim walk starts at the tail. */
static void lru_insert(struct ds_mesi_policy *p, struct ds_mesi_lru_node *n)
{
    struct ds_mesi_lru_node *h = &LRU_OF(p)->head;
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

static void lru_touch(struct ds_mesi_policy *p, struct ds_mesi_lru_node *n)
{
    lru_unlink(n);
    lru_insert(p, n);
}

static void lru_remove(struct ds_mesi_policy *p, struct ds_mesi_lru_node *n)
{
    (void)p;
    lru_unlink(n);
}

static struct ds_mesi_lru_node *lru_victim(struct ds_mesi_policy *p, struct ds_mesi_lru_node *prev)
{
    struct ds_mesi_lru_node *h = &LRU_OF(p)->head;
    struct ds_mesi_lru_node *n = prev ? prev->prev : h->prev;
    return n == h ? NULL : n;
}

void ds_mesi_lru_init(struct ds_mesi_lru *lru)
{
    lru->ops.insert = lru_insert;
    lru->ops.touch = lru_touch;
    lru->ops.remove = lru_remove;
    lru->ops.victim = lru_victim;
    lru->head.prev = lru->head.next = &lru->head;
}
