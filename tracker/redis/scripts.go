package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts share one convention: KEYS 1 to 7 are one torrent's keys (seeders, leechers,
// peers, torrent, tokens, sessions, session times: see torrentKeys), all in the torrent's slot.
// On a single server the global keys follow (index, counts, session index) and the script keeps
// them up to date itself, atomically with the swarm; in cluster mode they live in other slots,
// so the script leaves them alone and replies with what the driver must apply (see global).

// luaGlobal is Lua shared by the scripts that change swarm sizes: cnt holds the deltas of the
// swarm counters (torrents, seeders v4, seeders v6, leechers v4, leechers v6), which flush
// applies to the counts key when the script may touch it.
const luaGlobal = `
local cnt = {0, 0, 0, 0, 0}
local function famSlot(pm, seeders, fam4)
  local v6 = string.byte(pm, 21) ~= fam4 and 1 or 0
  if seeders then return 2 + v6 end
  return 4 + v6
end
local function flush(kcnt)
  if cnt[1] == 0 and cnt[2] == 0 and cnt[3] == 0 and cnt[4] == 0 and cnt[5] == 0 then return end
  local names = {'t', 's4', 's6', 'l4', 'l6'}
  for i = 1, 5 do
    if cnt[i] ~= 0 then redis.call('HINCRBY', kcnt, names[i], cnt[i]) end
  end
end
local function oldestOf(ks, kl)
  local o = nil
  local a = redis.call('ZRANGE', ks, 0, 0, 'WITHSCORES')
  if a[2] then o = tonumber(a[2]) end
  local b = redis.call('ZRANGE', kl, 0, 0, 'WITHSCORES')
  if b[2] and (o == nil or tonumber(b[2]) < o) then o = tonumber(b[2]) end
  return o
end
`

// announceLua applies one PeerUpdate and selects peers; see Pool.Announce, which calls it
// with the arguments that announceCall builds. KEYS: the seven torrent keys[, index, counts,
// session index]. ARGV: 1 peer key (25 bytes), 2 member (the key and its suffix), 3 the new
// value of the key in P{H}:p, 4 flags ('0' or '1' each: remove, seeder, completed, create,
// selSeeder, ipv4, ipv6, skipOwnUser, use global keys, hidden, secondary), 5 time, 6 want, 7 random,
// 8 info hash, 9 "uploaded:downloaded:corrupt", 10 user (decimal), 11 prefer bits (-1: none),
// 12 prefer address (4 or 16 bytes), 13 prefer family byte, 14 the peer key of the other
// family (the same peer ID and user).
//
// The work is bounded by Want, not by the swarm: a few O(1) or O(log n) calls for the update,
// and ZRANGE by rank over a window of the candidates from a random offset for the selection.
// The members are the packed records handed out, so no hash is read per peer; in the common
// case (no hidden peer in the swarm, both families wanted, public mode) no candidate is even
// looked into: the requester's own entries are recognized by identity, since Lua interns
// strings.
//
// Reply: "N" for an unknown torrent without create, else one string: sixteen big-endian 64-bit
// integers, snatched, seeders, leechers, snatches, freeleech, token, newSession, the counter
// deltas dt ds4 ds6 dl4 dl6, index (the score to lower the torrent's index entry to with
// ZADD LT, or -1 to leave it) and the lengths of the three strings that follow: the previous
// value without its suffix ("" when not found: the seeder flag, then "time:up:down"), the site
// ID ("" when not registered) and the previous session ("" when none); then the selected
// members, concatenated.
const announceLua = luaGlobal + `
local ks, kl, kp, kt, kk, kx, ky = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local key, m, val = ARGV[1], ARGV[2], ARGV[3]
local f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11 = string.byte(ARGV[4], 1, 11)
local remove, seeder, completed, create = f1 == 49, f2 == 49, f3 == 49, f4 == 49
local selSeeder, want4, want6, skipUser = f5 == 49, f6 == 49, f7 == 49, f8 == 49
local useIdx, hidden, secondary = f9 == 49, f10 == 49, f11 == 49
local now, want, rnd, ih = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local fam4 = FAM4
-- L is the length of the member's suffix (hidden, port, address): the same for every entry
-- of the key, whose family is part of it.
local L = #m - 25

local t = redis.call('HMGET', kt, 'n', 'id', 'fl', 'h')
if not t[1] then
  if not create then return 'N' end
  if remove then return struct.pack('>i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0) end
  redis.call('HSET', kt, 'n', 0)
  cnt[1] = 1
end

local prev = redis.call('HGET', kp, key)
local prevSeeder, prevHidden, prevText = false, false, ''
if prev then
  prevHidden, prevSeeder = string.byte(prev, 1) == 49, string.byte(prev, L + 1) == 49
  prevText = string.sub(prev, L + 1)
end

-- A registered torrent: its site attributes, the user's token and the peer's session, which
-- outlives the entry (stops, reaps) so that the next announce is credited from it.
local siteID, tfl, token, prevSession, newSession = t[2] or '', tonumber(t[3] or '0'), 0, '', 0
if t[2] then
  token = redis.call('SISMEMBER', kk, ARGV[10])
  local sk = string.sub(key, 1, 20) .. string.sub(key, 22, 25)
  local first, ann = now, 0
  prevSession = redis.call('HGET', kx, sk) or ''
  if prevSession ~= '' then
    local f, a = string.match(prevSession, '^[^:]*:[^:]*:[^:]*:([^:]*):[^:]*:(%d+)$')
    first, ann = f, tonumber(a)
  else
    newSession = 1
  end
  -- The second endpoint of an announce does not count it again (see PeerUpdate.Secondary).
  if not secondary then ann = ann + 1 end
  redis.call('HSET', kx, sk, ARGV[9] .. ':' .. first .. ':' .. now .. ':' .. ann)
  redis.call('ZADD', ky, now, sk)
  if useIdx and newSession == 1 then redis.call('ZADD', KEYS[10], 'LT', now, ih) end
end

local snatched = 0
local nhidden = tonumber(t[4] or '0')
if prev then
  local slot = famSlot(key, prevSeeder, fam4)
  cnt[slot] = cnt[slot] - 1
  if prevHidden then nhidden = nhidden - 1 end
end
if remove then
  if prev then
    redis.call('ZREM', prevSeeder and ks or kl, string.sub(key .. prev, 1, 25 + L))
    redis.call('HDEL', kp, key)
  end
else
  if completed and seeder and not prevSeeder then
    redis.call('HINCRBY', kt, 'n', 1)
    snatched = 1
  end
  -- The member changes with the endpoint and the hidden flag, the set with the seeder flag.
  if prev and string.sub(prev, 1, L + 1) ~= string.sub(val, 1, L + 1) then
    redis.call('ZREM', prevSeeder and ks or kl, string.sub(key .. prev, 1, 25 + L))
  end
  redis.call('ZADD', seeder and ks or kl, now, m)
  redis.call('HSET', kp, key, val)
  local slot = famSlot(key, seeder, fam4)
  cnt[slot] = cnt[slot] + 1
  if hidden then nhidden = nhidden + 1 end
end
-- h counts the hidden entries, so that a swarm without any needs no look at its members.
if nhidden ~= tonumber(t[4] or '0') then redis.call('HSET', kt, 'h', nhidden) end

local ns, nl = redis.call('ZCARD', ks), redis.call('ZCARD', kl)
local snatches = tonumber(t[1] or '0') + snatched
-- The index score is a lower bound of the oldest peer's time (0 for an empty torrent): a new
-- peer is newer than every other, so only a new entry or an emptied swarm can lower it, and
-- a reaping pass sets it exactly.
local idx = -1
if not remove and not prev then
  idx = now
elseif remove and prev and ns + nl == 0 then
  idx = 0
end
if useIdx then
  if idx >= 0 then redis.call('ZADD', KEYS[8], 'LT', idx, ih) end
  flush(KEYS[9])
end

local head = struct.pack('>i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8i8', snatched, ns, nl, snatches, tfl, token,
  newSession, cnt[1], cnt[2], cnt[3], cnt[4], cnt[5], idx, #prevText, #siteID, #prevSession) ..
  prevText .. siteID .. prevSession
local n = nl
if not selSeeder then n = n + ns end
if want <= 0 or n == 0 then return head end

-- Members are peer ID (20), family (1), user (4), hidden (1), port (2), address (4 or 16).
-- The requester's own entries: m itself, and its other family's entry, twin. In private mode
-- another user's entry may carry the same peer ID, so each candidate's ID is compared.
local twin = nil
local tv = redis.call('HGET', kp, ARGV[14])
if tv then twin = string.sub(ARGV[14] .. tv, 1, 25 + 26 - L) end
local id, id1, user = nil, nil, nil
if string.sub(key, 22, 25) ~= '\0\0\0\0' then id, id1 = string.sub(key, 1, 20), string.byte(key, 1) end
if skipUser then user = string.sub(key, 22, 25) end
local look = nhidden > 0 or not (want4 and want6) or id ~= nil or user ~= nil
local pbits, pfam = tonumber(ARGV[11]), tonumber(ARGV[13])
local pfull, prem, pprefix, pbyte = 0, 0, '', 0
if pbits >= 0 then
  pfull, prem = math.floor(pbits / 8), pbits % 8
  pprefix = string.sub(ARGV[12], 1, pfull)
  if prem > 0 then pbyte = math.floor(string.byte(ARGV[12], pfull + 1) / 2 ^ (8 - prem)) end
end
local function preferred(r)
  if string.byte(r, 21) ~= pfam then return false end
  if pfull > 0 and string.find(r, pprefix, 29, true) ~= 29 then return false end
  if prem > 0 then return math.floor(string.byte(r, 29 + pfull) / 2 ^ (8 - prem)) == pbyte end
  return true
end
local function eligible(r)
  local f, _, _, _, _, h = string.byte(r, 21, 26)
  if h == 49 then return false end
  if f == fam4 then
    if not want4 then return false end
  elseif not want6 then
    return false
  end
  if id and string.byte(r, 1) == id1 and string.find(r, id, 1, true) == 1 then return false end
  if user and string.find(r, user, 22, true) == 22 then return false end
  return true
end

-- whole holds the sets read in full, when a window covers them. out[1] is the head, so that
-- the reply is built by one concatenation.
local out, got, whole = {head}, 0, {}
local start = rnd % n
-- walk visits the first limit candidates (leechers, then seeders unless the requester seeds)
-- from the random start, wrapping around, chunk at a time, until want peers are chosen. In
-- mode 0 it takes every eligible one; in mode 1 the preferred ones only; in mode 2 those that
-- mode 1 did not see (not preferred, or past the first scanned).
local function walk(limit, chunk, mode, scanned)
  local i = 0
  while i < limit and got < want do
    local pos = (start + i) % n
    local k, from, last = kl, pos, nl - 1
    if pos >= nl then k, from, last = ks, pos - nl, ns - 1 end
    local to = from + chunk - 1
    if to > last then to = last end
    if to > from + (limit - i) - 1 then to = from + (limit - i) - 1 end
    local ms, base = nil, 0
    if last < chunk then
      ms = whole[k]
      if not ms then
        ms = redis.call('ZRANGE', k, 0, -1)
        whole[k] = ms
      end
      base = from
    else
      ms = redis.call('ZRANGE', k, from, to)
    end
    local c = to - from + 1
    if c > #ms - base then c = #ms - base end
    if c <= 0 then break end
    for j = 1, c do
      local r = ms[base + j]
      if r ~= m and r ~= twin and (not look or eligible(r)) then
        local take = true
        if mode == 1 then
          take = preferred(r)
        elseif mode == 2 then
          take = i + j > scanned or not preferred(r)
        end
        if take then
          got = got + 1
          out[got + 1] = r
          if got >= want then break end
        end
      end
    end
    i = i + c
  end
end

local chunk = want * 2
if chunk < 16 then chunk = 16 end
if chunk > 256 then chunk = 256 end
if pbits >= 0 then
  local scanned = n
  if scanned > MAXSCAN then scanned = MAXSCAN end
  walk(scanned, 256, 1, 0)
  walk(n, chunk, 2, scanned)
else
  walk(n, chunk, 0, 0)
end
return table.concat(out)
`

// reapScript removes the peers of one torrent older than a cutoff; a torrent left empty is
// purged when asked, unless the site registered it. KEYS: the seven torrent keys[, index,
// counts, session index]. ARGV: cutoff (unix seconds; peers strictly before it go), purge, info hash, use
// global keys, IPv4 family byte. Reply: {peers removed, torrents purged, index score or -1 to
// remove, site ID (empty when not registered), seeders, leechers, snatches, counter deltas (5)}.
var reapScript = goredis.NewScript(luaGlobal + `
local ks, kl, kp, kt = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local purge, ih, useIdx, fam4 = ARGV[2] == '1', ARGV[3], ARGV[4] == '1', tonumber(ARGV[5])
local removed, hid = 0, 0
for li, k in ipairs({ks, kl}) do
  while true do
    local old = redis.call('ZRANGEBYSCORE', k, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 500)
    if #old == 0 then break end
    local ids = {}
    for i, pm in ipairs(old) do
      local slot = famSlot(pm, li == 1, fam4)
      cnt[slot] = cnt[slot] - 1
      ids[i] = string.sub(pm, 1, 25)
      if string.byte(pm, 26) == 49 then hid = hid + 1 end
    end
    redis.call('HDEL', kp, unpack(ids))
    redis.call('ZREM', k, unpack(old))
    removed = removed + #old
  end
end
local ns, nl = redis.call('ZCARD', ks), redis.call('ZCARD', kl)
local t = redis.call('HMGET', kt, 'n', 'id')
if hid > 0 and t[1] then redis.call('HINCRBY', kt, 'h', -hid) end
-- An empty public torrent that stays keeps its index entry at 0, so that a purging pass finds
-- it; a registered one is never purged, so it leaves the index until its next announce.
local purged, score = 0, -1
if ns + nl > 0 then
  score = oldestOf(ks, kl)
elseif t[1] and not t[2] then
  if purge then
    redis.call('DEL', ks, kl, kp, kt)
    purged = 1
    cnt[1] = -1
  else
    score = 0
  end
end
if useIdx then
  if score < 0 then redis.call('ZREM', KEYS[8], ih) else redis.call('ZADD', KEYS[8], score, ih) end
  flush(KEYS[9])
end
return {removed, purged, score, t[2] or '', ns, nl, tonumber(t[1] or '0'), cnt[1], cnt[2], cnt[3], cnt[4], cnt[5]}
`)

// dropScript deletes one torrent with its peers, tokens and sessions (the site deleted or
// unregistered it). KEYS: the seven torrent keys[, index, counts, session index]. ARGV: info
// hash, use global keys, IPv4 family byte, only if registered. Reply: {dropped, counter deltas (5)}.
var dropScript = goredis.NewScript(luaGlobal + `
local ks, kl = KEYS[1], KEYS[2]
local ih, useIdx, fam4, onlySite = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), ARGV[4] == '1'
local t = redis.call('HMGET', KEYS[4], 'n', 'id')
if not t[1] or (onlySite and not t[2]) then return {0, 0, 0, 0, 0, 0} end
for li, k in ipairs({ks, kl}) do
  for _, pm in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    local slot = famSlot(pm, li == 1, fam4)
    cnt[slot] = cnt[slot] - 1
  end
end
cnt[1] = -1
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
if useIdx then
  redis.call('ZREM', KEYS[8], ih)
  redis.call('ZREM', KEYS[10], ih)
  flush(KEYS[9])
end
return {1, cnt[1], cnt[2], cnt[3], cnt[4], cnt[5]}
`)

// registerScript makes a torrent registered, keeping its peers, snatches and sessions if it was
// known. KEYS: the seven torrent keys[, index, counts, session index]. ARGV: 1 site ID,
// 2 freeleech, 3 snatches (for a new torrent), 4 replace tokens, 5 info hash, 6 use global
// keys, 7 token count N, then N user IDs, then baselines as (session key, session value, last
// seen) triples, each stored only when the session is unknown. Reply: {created, oldest new
// baseline or -1, torrents counter delta}.
var registerScript = goredis.NewScript(luaGlobal + `
local kt, kk, kx, ky = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local ih, useIdx, ntok = ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local created = 0
if redis.call('EXISTS', kt) == 0 then
  redis.call('HSET', kt, 'n', ARGV[3])
  created, cnt[1] = 1, 1
end
redis.call('HSET', kt, 'id', ARGV[1], 'fl', ARGV[2])
if ARGV[4] == '1' then redis.call('DEL', kk) end
for i = 8, 7 + ntok do redis.call('SADD', kk, ARGV[i]) end
local oldest = -1
for i = 8 + ntok, #ARGV, 3 do
  if redis.call('HSETNX', kx, ARGV[i], ARGV[i + 1]) == 1 then
    local last = tonumber(ARGV[i + 2])
    redis.call('ZADD', ky, last, ARGV[i])
    if oldest < 0 or last < oldest then oldest = last end
  end
end
if useIdx then
  if oldest >= 0 then redis.call('ZADD', KEYS[10], 'LT', oldest, ih) end
  flush(KEYS[9])
end
return {created, oldest, cnt[1]}
`)

// siteTorrentScript changes a registered torrent. KEYS: torrent, tokens. ARGV: action
// ("fl", "addtoken", "rmtoken"), value. Reply: 0 when the torrent is not registered, else 1.
var siteTorrentScript = goredis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return 0 end
if ARGV[1] == 'fl' then
  redis.call('HSET', KEYS[1], 'fl', ARGV[2])
elseif ARGV[1] == 'addtoken' then
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
`)

// pruneSessionsScript forgets the sessions of one torrent last seen before a cutoff. KEYS:
// sessions, session times[, session index]. ARGV: cutoff, info hash, use global keys. Reply:
// {removed, the oldest remaining session's time or -1}.
var pruneSessionsScript = goredis.NewScript(`
local kx, ky = KEYS[1], KEYS[2]
local removed = 0
while true do
  local old = redis.call('ZRANGEBYSCORE', ky, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 500)
  if #old == 0 then break end
  redis.call('HDEL', kx, unpack(old))
  redis.call('ZREM', ky, unpack(old))
  removed = removed + #old
end
local oldest = -1
local a = redis.call('ZRANGE', ky, 0, 0, 'WITHSCORES')
if a[2] then oldest = tonumber(a[2]) end
if ARGV[3] == '1' then
  if oldest < 0 then redis.call('ZREM', KEYS[3], ARGV[2]) else redis.call('ZADD', KEYS[3], oldest, ARGV[2]) end
end
return {removed, oldest}
`)

// userPeersScript counts one user's peers in one torrent. KEYS: seeders, leechers. ARGV: the
// user's 4 bytes as stored in members. Reply: {leeching, seeding}.
var userPeersScript = goredis.NewScript(`
local user, out = ARGV[1], {0, 0}
for li, k in ipairs({KEYS[2], KEYS[1]}) do
  for _, pm in ipairs(redis.call('ZRANGE', k, 0, -1)) do
    if string.sub(pm, 22, 25) == user then out[li] = out[li] + 1 end
  end
end
return out
`)

// removeUserScript deletes a user from the users hash. KEYS: users. ARGV: the passkey. Reply:
// the user's stored value, "" when the passkey was unknown.
var removeUserScript = goredis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return '' end
redis.call('HDEL', KEYS[1], ARGV[1])
return v
`)

// hideUserScript sets the hidden flag of one user's entries in one torrent. KEYS: seeders,
// leechers, peers, torrent. ARGV: the user's 4 bytes as stored in members. Each entry's member
// is replaced (keeping its score) and its stored value changed alike, and the torrent's count
// of hidden entries grows by as many. Reply: {entries hidden}.
var hideUserScript = goredis.NewScript(`
local user, n = ARGV[1], 0
for _, k in ipairs({KEYS[1], KEYS[2]}) do
  local ms = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  for i = 1, #ms, 2 do
    local pm = ms[i]
    if string.sub(pm, 22, 25) == user and string.byte(pm, 26) == 48 then
      local key = string.sub(pm, 1, 25)
      redis.call('ZREM', k, pm)
      redis.call('ZADD', k, ms[i + 1], key .. '1' .. string.sub(pm, 27))
      local v = redis.call('HGET', KEYS[3], key)
      if v then redis.call('HSET', KEYS[3], key, '1' .. string.sub(v, 2)) end
      n = n + 1
    end
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[4], 'h', n) end
return {n}
`)

// updateUserScript changes a user in the users hash. KEYS: users. ARGV: "update" with passkey
// and the new "canLeech:protected", or "rekey" with the old and the new passkey. Reply: 0 when
// the passkey is unknown, else 1.
var updateUserScript = goredis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[2])
if not v then return 0 end
if ARGV[1] == 'update' then
  local id = string.match(v, '^[^:]+')
  redis.call('HSET', KEYS[1], ARGV[2], id .. ':' .. ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[3], v)
end
return 1
`)

// editWhitelistScript replaces every entry equal to ARGV[1] with ARGV[2] in the list KEYS[1].
var editWhitelistScript = goredis.NewScript(`
local l = redis.call('LRANGE', KEYS[1], 0, -1)
for i, p in ipairs(l) do
  if p == ARGV[1] then redis.call('LSET', KEYS[1], i - 1, ARGV[2]) end
end
return 1
`)
