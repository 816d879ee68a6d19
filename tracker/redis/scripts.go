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

// announceScript applies one PeerUpdate and selects peers. KEYS: the seven torrent keys[, index,
// counts, session index]. ARGV: 1 member, 2 value, 3 time, 4 remove, 5 seeder, 6 completed,
// 7 create, 8 want, 9 selSeeder, 10 ipv4, 11 ipv6, 12 skipOwnUser, 13 random, 14 info hash,
// 15 use global keys, 16 IPv4 family byte, 17 "uploaded:downloaded:corrupt", 18 user (decimal),
// 19 prefer bits (-1: none), 20 prefer address (4 or 16 bytes), 21 prefer family byte,
// 22 most candidates scanned for the preferred subnet.
//
// Reply: {-1} for an unknown torrent without create, else {1 found, 2 prevSeeder, 3 prevTime,
// 4 prevValue, 5 snatched, 6 seeders, 7 leechers, 8 snatches, 9 oldest, 10 site ID (empty when not
// registered), 11 freeleech, 12 token, 13 previous session (empty when none), 14 new session,
// 15..19 counter deltas, then member1, value1, ...}. oldest is the index score (the oldest
// peer's time, 0 when empty), or -1 when nothing was stored.
var announceScript = goredis.NewScript(luaGlobal + `
local ks, kl, kp, kt, kk, kx, ky = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local m, val, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local remove, seeder, completed, create = ARGV[4] == '1', ARGV[5] == '1', ARGV[6] == '1', ARGV[7] == '1'
local want = tonumber(ARGV[8])
local selSeeder, want4, want6, skipUser = ARGV[9] == '1', ARGV[10] == '1', ARGV[11] == '1', ARGV[12] == '1'
local rnd, ih, useIdx, fam4 = tonumber(ARGV[13]), ARGV[14], ARGV[15] == '1', tonumber(ARGV[16])
local counters, userDec = ARGV[17], ARGV[18]
local pbits, paddr, pfam, maxScan = tonumber(ARGV[19]), ARGV[20], tonumber(ARGV[21]), tonumber(ARGV[22])

local t = redis.call('HMGET', kt, 'n', 'id', 'fl')
if not t[1] then
  if not create then return {-1} end
  if remove then return {0, 0, 0, '', 0, 0, 0, 0, -1, '', 0, 0, '', 0, 0, 0, 0, 0, 0} end
  redis.call('HSET', kt, 'n', 0)
  cnt[1] = 1
end

local found, prevSeeder, prevTime, prevVal = 0, 0, 0, ''
local sc = redis.call('ZSCORE', ks, m)
if sc then
  found, prevSeeder, prevTime = 1, 1, tonumber(sc)
else
  local lc = redis.call('ZSCORE', kl, m)
  if lc then found, prevTime = 1, tonumber(lc) end
end
if found == 1 then prevVal = redis.call('HGET', kp, m) or '' end

-- A registered torrent: its site attributes, the user's token and the peer's session, which
-- outlives the entry (stops, reaps) so that the next announce is credited from it.
local siteID, fl, token, prevSession, newSession = t[2] or '', tonumber(t[3] or '0'), 0, '', 0
if t[2] then
  token = redis.call('SISMEMBER', kk, userDec)
  local sk = string.sub(m, 1, 20) .. string.sub(m, 22, 25)
  local first, ann = now, 0
  prevSession = redis.call('HGET', kx, sk) or ''
  if prevSession ~= '' then
    local f = {}
    for x in string.gmatch(prevSession, '[^:]+') do f[#f + 1] = x end
    first, ann = f[4], tonumber(f[6])
  else
    newSession = 1
  end
  redis.call('HSET', kx, sk, counters .. ':' .. first .. ':' .. now .. ':' .. (ann + 1))
  redis.call('ZADD', ky, now, sk)
  if useIdx and newSession == 1 then redis.call('ZADD', KEYS[10], 'LT', now, ih) end
end

local snatched = 0
if found == 1 then
  local slot = famSlot(m, prevSeeder == 1, fam4)
  cnt[slot] = cnt[slot] - 1
end
if remove then
  if found == 1 then
    redis.call('ZREM', ks, m)
    redis.call('ZREM', kl, m)
    redis.call('HDEL', kp, m)
  end
else
  if completed and seeder and prevSeeder == 0 then
    redis.call('HINCRBY', kt, 'n', 1)
    snatched = 1
  end
  if seeder then
    if found == 1 and prevSeeder == 0 then redis.call('ZREM', kl, m) end
    redis.call('ZADD', ks, now, m)
  else
    if prevSeeder == 1 then redis.call('ZREM', ks, m) end
    redis.call('ZADD', kl, now, m)
  end
  redis.call('HSET', kp, m, val)
  local slot = famSlot(m, seeder, fam4)
  cnt[slot] = cnt[slot] + 1
end

local ns, nl = redis.call('ZCARD', ks), redis.call('ZCARD', kl)
local snatches = tonumber(redis.call('HGET', kt, 'n') or '0')
local oldest = 0
if ns + nl > 0 then oldest = oldestOf(ks, kl) end
if useIdx then
  redis.call('ZADD', KEYS[8], oldest, ih)
  flush(KEYS[9])
end

local res = {found, prevSeeder, prevTime, prevVal, snatched, ns, nl, snatches, oldest,
  siteID, fl, token, prevSession, newSession, cnt[1], cnt[2], cnt[3], cnt[4], cnt[5]}
if want <= 0 then return res end
local n = nl
if not selSeeder then n = n + ns end
if n == 0 then return res end

local id, user = string.sub(m, 1, 20), string.sub(m, 22, 25)
local got = 0
local start = rnd % n

local function eligible(pm, pv)
  if not pv or string.sub(pm, 1, 20) == id or string.sub(pv, 19, 19) == '1' then return false end
  if skipUser and string.sub(pm, 22, 25) == user then return false end
  if string.byte(pm, 21) == fam4 then return want4 end
  return want6
end

local pfull, prem = 0, 0
if pbits >= 0 then pfull, prem = math.floor(pbits / 8), pbits % 8 end
local function preferred(pm, pv)
  if string.byte(pm, 21) ~= pfam then return false end
  if pfull > 0 and string.sub(pv, 1, pfull) ~= string.sub(paddr, 1, pfull) then return false end
  if prem > 0 then
    local d = 2 ^ (8 - prem)
    return math.floor(string.byte(pv, pfull + 1) / d) == math.floor(string.byte(paddr, pfull + 1) / d)
  end
  return true
end

local function add(pm, pv)
  res[#res + 1] = pm
  res[#res + 1] = pv
  got = got + 1
end

-- walk visits the first limit candidates (leechers, then seeders unless the requester seeds)
-- from the random start, wrapping around, chunk at a time, until want peers are chosen.
local function walk(limit, chunk, visit)
  local i = 0
  while i < limit and got < want do
    local pos = (start + i) % n
    local key, from, last = kl, pos, nl - 1
    if pos >= nl then key, from, last = ks, pos - nl, ns - 1 end
    local to = from + chunk - 1
    if to > last then to = last end
    if to > from + (limit - i) - 1 then to = from + (limit - i) - 1 end
    local ms = redis.call('ZRANGE', key, from, to)
    if #ms == 0 then break end
    local vs = redis.call('HMGET', kp, unpack(ms))
    for j = 1, #ms do
      if got >= want then break end
      visit(i + j - 1, ms[j], vs[j])
    end
    i = i + #ms
  end
end

local chunk = want * 2
if chunk < 16 then chunk = 16 end
if chunk > 256 then chunk = 256 end
local scanned = 0
if pbits >= 0 then
  scanned = n
  if scanned > maxScan then scanned = maxScan end
  walk(scanned, 256, function(i, pm, pv)
    if eligible(pm, pv) and preferred(pm, pv) then add(pm, pv) end
  end)
end
walk(n, chunk, function(i, pm, pv)
  if eligible(pm, pv) and not (i < scanned and preferred(pm, pv)) then add(pm, pv) end
end)
return res
`)

// reapScript removes the peers of one torrent older than a cutoff; a torrent left empty is
// purged when asked, unless the site registered it. KEYS: the seven torrent keys[, index,
// counts, session index]. ARGV: cutoff (unix seconds; peers strictly before it go), purge, info hash, use
// global keys, IPv4 family byte. Reply: {peers removed, torrents purged, index score or -1 to
// remove, site ID (empty when not registered), seeders, leechers, snatches, counter deltas (5)}.
var reapScript = goredis.NewScript(luaGlobal + `
local ks, kl, kp, kt = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local purge, ih, useIdx, fam4 = ARGV[2] == '1', ARGV[3], ARGV[4] == '1', tonumber(ARGV[5])
local removed = 0
for li, k in ipairs({ks, kl}) do
  while true do
    local old = redis.call('ZRANGEBYSCORE', k, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 500)
    if #old == 0 then break end
    for _, pm in ipairs(old) do
      local slot = famSlot(pm, li == 1, fam4)
      cnt[slot] = cnt[slot] - 1
    end
    redis.call('HDEL', kp, unpack(old))
    redis.call('ZREM', k, unpack(old))
    removed = removed + #old
  end
end
local ns, nl = redis.call('ZCARD', ks), redis.call('ZCARD', kl)
local t = redis.call('HMGET', kt, 'n', 'id')
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
