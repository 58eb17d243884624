package sharedlimits

import "github.com/redis/go-redis/v9"

// nowLua sets now to the store's time in milliseconds.
const nowLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// failScript counts a failed login against each key triple (count, recent
// fingerprints, block), as ratelimit.Failures does: a fingerprint among the
// key's recent ones adds nothing; a counted failure restarts the window; the
// count reaching max blocks the key for block ms unless it is blocked already.
//
// The fingerprint was made under the fleet's key, which the caller sends
// along: if the store has lost it (a restart), the caller's becomes the
// fleet's; if the store has another, nothing is counted and the script
// returns {-1}, so that the caller fetches it and tries again.
//
// KEYS[1]: the fingerprint key's key; then count, fingerprints and block for
// each key. ARGV[1]: the fingerprint key, ARGV[2]: the fingerprint, ARGV[3]:
// how many fingerprints to remember; then window, max, block (ms) for each
// key. It returns the count and block time left (ms) of each key.
var failScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'NX')
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local fp, recent = ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 0, (#KEYS - 1) / 3 - 1 do
  local count, fps, block = KEYS[3*i+2], KEYS[3*i+3], KEYS[3*i+4]
  local window, max, blockms = tonumber(ARGV[3*i+4]), tonumber(ARGV[3*i+5]), tonumber(ARGV[3*i+6])
  local n
  if redis.call('ZSCORE', fps, fp) then
    n = tonumber(redis.call('GET', count) or '0')
  else
    n = redis.call('INCR', count)
    redis.call('ZADD', fps, n, fp)
    redis.call('ZREMRANGEBYRANK', fps, 0, -(recent + 1))
    redis.call('PEXPIRE', count, window)
    redis.call('PEXPIRE', fps, window)
    if max > 0 and blockms > 0 and n >= max and redis.call('EXISTS', block) == 0 then
      redis.call('SET', block, '1', 'PX', blockms)
    end
  end
  out[#out + 1] = n
  out[#out + 1] = math.max(redis.call('PTTL', block), 0)
end
return out
`)

// loginScript follows a good login: it forgets the failures of the user whose
// password was tried (but never the address's), then takes a session slot
// of the mailbox and its LOGIN-DELAY interval, both or neither.
//
// KEYS: the tried user's count, fingerprints and block; the mailbox's
// sessions and last login. ARGV: the session's member, max sessions, lease
// (ms), interval (ms). It returns {0, 0} if the session may go on, {1, n}
// if n sessions hold all the slots, {2, ms} if the interval has ms left.
var loginScript = redis.NewScript(nowLua + `
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local member, max, lease, interval = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local n = redis.call('ZCARD', KEYS[4])
  if n >= max then return {1, n} end
end
if interval > 0 and not redis.call('SET', KEYS[5], '1', 'NX', 'PX', interval) then
  return {2, math.max(redis.call('PTTL', KEYS[5]), 1)}
end
if max > 0 then
  redis.call('ZADD', KEYS[4], now + lease, member)
  redis.call('PEXPIRE', KEYS[4], lease)
end
return {0, 0}
`)

// renewScript extends the leases of live sessions, adding back any the store
// lost (a restart, a lease that ran out while it was unreachable).
//
// KEYS: the sessions key of each session. ARGV[1]: the lease (ms), then the
// member of each session.
var renewScript = redis.NewScript(nowLua + `
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
`)

// connectScript is GCRA (the generic cell rate algorithm): one key per
// address holds the theoretical arrival time, in microseconds, of the next
// connection at the sustained rate; a connection is allowed while that time
// is less than burst intervals ahead.
//
// KEYS[1]: the address's key. ARGV: the interval between connections at the
// rate, and the burst, in microseconds and connections. It returns 1 if the
// connection is allowed.
var connectScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local next = tat + interval
if next - now > burst * interval then return 0 end
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000))
return 1
`)

// fingerprintKeyScript returns the fleet's fingerprint key, storing ARGV[1]
// as the key if there is none yet: the first instance to ask chooses it.
// It is the one key that does not expire: one value, however long the fleet runs.
var fingerprintKeyScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
`)
