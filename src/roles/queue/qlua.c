/* Lua scripts of the queue role (see qlua.h for their KEYS, ARGV and replies). */
#include "roles/queue/qlua.h"

/* Shared helper: move one pending message to the dead-letter stream with its original id,
 * delivery count and group, and ack it, in the same script (atomic on the shard). */
#define DEAD_LETTER                                                                             \
    "local function dead_letter(k, d, reg, g, id, count, prefix, dlqname)\n"                    \
    "  local e = redis.call('XRANGE', k, id, id)\n"                                             \
    "  if #e > 0 and e[1][2] then\n"                                                            \
    "    local f = e[1][2]\n"                                                                   \
    "    f[#f+1] = 'oid'; f[#f+1] = prefix .. id\n"                                             \
    "    f[#f+1] = 'dc'; f[#f+1] = tostring(count)\n"                                           \
    "    f[#f+1] = 'og'; f[#f+1] = g\n"                                                         \
    "    redis.call('XADD', d, '*', unpack(f))\n"                                               \
    "    redis.call('SADD', reg, dlqname)\n"                                                    \
    "  end\n"                                                                                   \
    "  redis.call('XACK', k, g, id)\n"                                                          \
    "end\n"

const char ds_qlua_consume[] =
    "local g, c, n, big = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]\n"
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  if n <= 0 then break end\n"
    "  if redis.call('EXISTS', k) == 1 then\n"
    "    local part = tonumber(ARGV[4 + i])\n"
    "    local pend = redis.pcall('XPENDING', k, g, 'IDLE', big, '-', '+', n)\n"
    "    if type(pend) == 'table' and pend.err then\n"
    "      redis.call('XGROUP', 'CREATE', k, g, '0')\n"
    "      pend = {}\n"
    "    end\n"
    "    if #pend > 0 then\n"
    "      local ids, cnt = {}, {}\n"
    "      for _, e in ipairs(pend) do ids[#ids+1] = e[1]; cnt[e[1]] = e[4] end\n"
    "      for _, e in ipairs(redis.call('XCLAIM', k, g, c, big, unpack(ids))) do\n"
    "        if e[2] then\n"
    "          out[#out+1] = {part, e[1], cnt[e[1]] + 1, e[2]}\n"
    "          n = n - 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if n > 0 then\n"
    "      local r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', n, 'STREAMS', k, '>')\n"
    "      if r then\n"
    "        for _, e in ipairs(r[1][2]) do\n"
    "          out[#out+1] = {part, e[1], 1, e[2]}\n"
    "          n = n - 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

const char ds_qlua_nack[] =
    DEAD_LETTER
    "local k, d, reg, g = KEYS[1], KEYS[2], KEYS[3], ARGV[1]\n"
    "local max, idle, isdlq = tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'\n"
    "local nacked, dead = 0, 0\n"
    "for i = 7, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  local p = redis.pcall('XPENDING', k, g, id, id, 1)\n"
    "  if type(p) == 'table' and not p.err and #p == 1 then\n"
    "    if p[1][4] >= max and not isdlq then\n"
    "      dead_letter(k, d, reg, g, id, p[1][4], ARGV[6], ARGV[5])\n"
    "      dead = dead + 1\n"
    "    else\n"
    "      redis.call('XCLAIM', k, g, '~ready', 0, id, 'IDLE', idle, 'JUSTID')\n"
    "      nacked = nacked + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {nacked, dead}\n";

const char ds_qlua_reap[] =
    DEAD_LETTER
    "local k, d, reg = KEYS[1], KEYS[2], KEYS[3]\n"
    "if redis.call('EXISTS', k) == 0 then return {0, 0, 0} end\n"
    "local max, big, isdlq = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1'\n"
    "local budget, minvis = tonumber(ARGV[6]), ARGV[7]\n"
    "local red, dead = 0, 0\n"
    "local floor, floorid = nil, nil\n"
    "local function parse(id)\n"
    "  local a, b = string.match(id, '^(%d+)-(%d+)$')\n"
    "  return {tonumber(a), tonumber(b)}\n"
    "end\n"
    "local function less(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end\n"
    "for _, gi in ipairs(redis.call('XINFO', 'GROUPS', k)) do\n"
    "  local info = {}\n"
    "  for j = 1, #gi, 2 do info[gi[j]] = gi[j + 1] end\n"
    "  local g = info['name']\n"
    "  local start, scanned = '-', 0\n"
    "  while info['pending'] > 0 and scanned < budget do\n"
    "    local page = redis.call('XPENDING', k, g, 'IDLE', minvis, start, '+', 200)\n"
    "    for _, e in ipairs(page) do\n"
    "      local id, owner, idle, count = e[1], e[2], e[3], e[4]\n"
    "      if owner ~= '~ready' then\n"
    "        local vis = tonumber(string.match(owner, '@(%d+)$')) or 0\n"
    "        if idle >= vis then\n"
    "          if count >= max and not isdlq then\n"
    "            dead_letter(k, d, reg, g, id, count, ARGV[5], ARGV[4])\n"
    "            dead = dead + 1\n"
    "          else\n"
    "            redis.call('XCLAIM', k, g, '~ready', 0, id, 'IDLE', big, 'JUSTID')\n"
    "            red = red + 1\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    scanned = scanned + #page\n"
    "    if #page < 200 then break end\n"
    "    start = '(' .. page[#page][1]\n"
    "  end\n"
    "  local s = redis.call('XPENDING', k, g)\n"
    "  local t = info['last-delivered-id']\n"
    "  if s[1] > 0 then t = s[2] end\n"
    "  local pt = parse(t)\n"
    "  if floor == nil or less(pt, floor) then floor, floorid = pt, t end\n"
    "end\n"
    "local trimmed = 0\n"
    "if floorid then trimmed = redis.call('XTRIM', k, 'MINID', floorid) end\n"
    "return {red, dead, trimmed}\n";

const char ds_qlua_produce_dedup[] =
    "local old = redis.call('GET', KEYS[2])\n"
    "if old then return {0, old} end\n"
    "local f = {}\n"
    "for i = 3, #ARGV do f[#f+1] = ARGV[i] end\n"
    "local id = ARGV[2] .. redis.call('XADD', KEYS[1], '*', unpack(f))\n"
    "redis.call('SET', KEYS[2], id, 'PX', ARGV[1])\n"
    "return {1, id}\n";

const char ds_qlua_stats[] =
    "local P = #ARGV\n"
    "local out = {}\n"
    "for i = 1, P do\n"
    "  local k, d = KEYS[i], KEYS[P + i]\n"
    "  local dl = redis.call('XLEN', d)\n"
    "  if redis.call('EXISTS', k) == 1 or dl > 0 then\n"
    "    local groups = {}\n"
    "    if redis.call('EXISTS', k) == 1 then\n"
    "      for _, gi in ipairs(redis.call('XINFO', 'GROUPS', k)) do\n"
    "        local info = {}\n"
    "        for j = 1, #gi, 2 do info[gi[j]] = gi[j + 1] end\n"
    "        local cons = {}\n"
    "        for _, ci in ipairs(redis.call('XINFO', 'CONSUMERS', k, info['name'])) do\n"
    "          local c = {}\n"
    "          for j = 1, #ci, 2 do c[ci[j]] = ci[j + 1] end\n"
    "          cons[#cons+1] = {c['name'], c['pending'], c['idle']}\n"
    "        end\n"
    "        local lag = info['lag']\n"
    "        if not lag then lag = -1 end\n"
    "        groups[#groups+1] = {info['name'], info['pending'], lag, cons}\n"
    "      end\n"
    "    end\n"
    "    out[#out+1] = {tonumber(ARGV[i]), redis.call('XLEN', k), dl, groups}\n"
    "  end\n"
    "end\n"
    "return out\n";
