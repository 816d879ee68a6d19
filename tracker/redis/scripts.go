package redis

import goredis "github.com/redis/go-redis/v9"

// announceScript applies one PeerUpdate and selects peers. KEYS: seeders, leechers, peers,
// torrent[, index]. ARGV: member, value, time, remove, seeder, completed, create, want,
// selSeeder, ipv4, ipv6, skipOwnUser, random, info hash, use index, IPv4 family byte.
//
// Reply: {-1} for an unknown torrent without create, else {found, prevSeeder, prevTime,
// prevValue, snatched, seeders, leechers, snatches, oldest, member1, value1, ...}; oldest is
// the index score (the oldest peer's time, 0 when empty), or -1 when nothing was stored.
var announceScript = goredis.NewScript(`
local ks, kl, kp, kt, kidx = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m, val, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local remove, seeder, completed, create = ARGV[4] == '1', ARGV[5] == '1', ARGV[6] == '1', ARGV[7] == '1'
local want = tonumber(ARGV[8])
local selSeeder, want4, want6, skipUser = ARGV[9] == '1', ARGV[10] == '1', ARGV[11] == '1', ARGV[12] == '1'
local rnd, ih, useIdx, fam4 = tonumber(ARGV[13]), ARGV[14], ARGV[15] == '1', tonumber(ARGV[16])

if redis.call('EXISTS', kt) == 0 then
  if not create then return {-1} end
  if remove then return {0, 0, 0, '', 0, 0, 0, 0, -1} end
  redis.call('HSET', kt, 'n', 0)
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

local snatched = 0
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
end

local ns, nl = redis.call('ZCARD', ks), redis.call('ZCARD', kl)
local snatches = tonumber(redis.call('HGET', kt, 'n') or '0')
local oldest = 0
if ns + nl > 0 then
  oldest = nil
  local a = redis.call('ZRANGE', ks, 0, 0, 'WITHSCORES')
  if a[2] then oldest = tonumber(a[2]) end
  local b = redis.call('ZRANGE', kl, 0, 0, 'WITHSCORES')
  if b[2] and (oldest == nil or tonumber(b[2]) < oldest) then oldest = tonumber(b[2]) end
end
if useIdx then redis.call('ZADD', kidx, oldest, ih) end

local res = {found, prevSeeder, prevTime, prevVal, snatched, ns, nl, snatches, oldest}
if want <= 0 then return res end
local n = nl
if not selSeeder then n = n + ns end
if n == 0 then return res end

local id, user = string.sub(m, 1, 20), string.sub(m, 22, 25)
local chunk = want * 2
if chunk < 16 then chunk = 16 end
if chunk > 256 then chunk = 256 end
local start = rnd % n
local got, i = 0, 0
while i < n and got < want do
  local pos = (start + i) % n
  local key, from, last = kl, pos, nl - 1
  if pos >= nl then key, from, last = ks, pos - nl, ns - 1 end
  local to = from + chunk - 1
  if to > last then to = last end
  if to > from + (n - i) - 1 then to = from + (n - i) - 1 end
  local ms = redis.call('ZRANGE', key, from, to)
  if #ms == 0 then break end
  local vs = redis.call('HMGET', kp, unpack(ms))
  for j = 1, #ms do
    local pm, pv = ms[j], vs[j]
    if got < want and pv and string.sub(pm, 1, 20) ~= id and string.sub(pv, 19, 19) ~= '1'
      and not (skipUser and string.sub(pm, 22, 25) == user) then
      local isv4 = string.byte(pm, 21) == fam4
      if (isv4 and want4) or ((not isv4) and want6) then
        res[#res + 1] = pm
        res[#res + 1] = pv
        got = got + 1
      end
    end
  end
  i = i + #ms
end
return res
`)

// reapScript removes the peers of one torrent older than a cutoff. KEYS: seeders, leechers,
// peers, torrent[, index]. ARGV: cutoff (unix seconds; peers strictly before it go), purge,
// info hash, use index. Reply: {peers removed, torrents purged, index score or -1 to remove}.
var reapScript = goredis.NewScript(`
local ks, kl, kp, kt, kidx = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local purge, ih, useIdx = ARGV[2] == '1', ARGV[3], ARGV[4] == '1'
local removed = 0
for _, k in ipairs({ks, kl}) do
  while true do
    local old = redis.call('ZRANGEBYSCORE', k, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 500)
    if #old == 0 then break end
    redis.call('HDEL', kp, unpack(old))
    redis.call('ZREM', k, unpack(old))
    removed = removed + #old
  end
end
local ns, nl = redis.call('ZCARD', ks), redis.call('ZCARD', kl)
local purged, score = 0, 0
local exists = redis.call('EXISTS', kt) == 1
if ns + nl == 0 then
  if not exists then
    score = -1 -- a stale index entry
  elseif purge then
    redis.call('DEL', ks, kl, kp, kt)
    purged, score = 1, -1
  end
else
  score = nil
  local a = redis.call('ZRANGE', ks, 0, 0, 'WITHSCORES')
  if a[2] then score = tonumber(a[2]) end
  local b = redis.call('ZRANGE', kl, 0, 0, 'WITHSCORES')
  if b[2] and (score == nil or tonumber(b[2]) < score) then score = tonumber(b[2]) end
end
if useIdx then
  if score < 0 then redis.call('ZREM', kidx, ih) else redis.call('ZADD', kidx, score, ih) end
end
return {removed, purged, score}
`)
