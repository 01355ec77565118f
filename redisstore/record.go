// Idempotency records: Begin, Complete, Release and Record, each one Lua
// script on the record's one key.

package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42300104/dedup"
)

// A record is the string value of its key:
//
//	dedup:r1 <state> <token> <lease ends> <TTL> <owner> <len(fingerprint)>\n<fingerprint><result>
//
// Numbers are decimal: the state is dedup.RecordState's, the lease end in
// Unix microseconds of the server's clock (0 once completed), the TTL in
// milliseconds; the owner is the nonce of the Begin that acquired it. Any
// other value of a key is a plain mark. Part of the stored format: a
// fleet's processes must agree on it.
const recordMagic = "dedup:r1 "

// The scripts share the parse of a record: st is nil for a plain mark,
// and at is where the fingerprint starts.
const parseRecord = `
local function parse(v)
  return string.match(v, '^dedup:r1 ([12]) (%d+) (%d+) (%d+) (%S+) (%d+)\n()')
end
`

// beginScript acquires KEYS[1] for fingerprint ARGV[1], with a lease of
// ARGV[2] ms and a TTL of ARGV[3] ms, for the call whose nonce is ARGV[4];
// or reports who has it. It returns {outcome, value, TIME seconds, TIME
// microseconds, PTTL}.
var beginScript = redis.NewScript(parseRecord + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token, pttl = now, tonumber(ARGV[3])
local v = redis.call('GET', KEYS[1])
if v then
  local left = redis.call('PTTL', KEYS[1])
  local st, tok, le, _, owner, fpl, at = parse(v)
  if not st then return {'completed', v, t[1], t[2], left} end
  if string.sub(v, at, at + tonumber(fpl) - 1) ~= ARGV[1] then return {'mismatch', v, t[1], t[2], left} end
  if st == '2' then return {'completed', v, t[1], t[2], left} end
  if now < tonumber(le) then
    if owner == ARGV[4] then return {'retried', v, t[1], t[2], left} end
    return {'in-progress', v, t[1], t[2], left}
  end
  token = math.max(tonumber(tok) + 1, now)
  pttl = math.max(pttl, left)
end
local r = string.format('dedup:r1 1 %.0f %.0f %s %s %d\n', token, now + tonumber(ARGV[2]) * 1000, ARGV[3], ARGV[4], #ARGV[1]) .. ARGV[1]
redis.call('SET', KEYS[1], r, 'PX', pttl)
return {'acquired', r, t[1], t[2], pttl}
`)

// completeScript stores result ARGV[2] in the record of KEYS[1] begun with
// token ARGV[1], if fingerprint and result fit in ARGV[3] bytes. It
// returns {'ok'}, {'none'}, {'stale', token} or {'too-large', size}.
var completeScript = redis.NewScript(parseRecord + `
local v = redis.call('GET', KEYS[1])
if not v then return {'none'} end
local st, tok, _, ttl, owner, fpl, at = parse(v)
if not st then st, tok = '2', '0' end
if tok ~= ARGV[1] then return {'stale', tok} end
if st == '2' then return {'ok'} end
local n = tonumber(fpl) + #ARGV[2]
if n > tonumber(ARGV[3]) then return {'too-large', n} end
local r = string.format('dedup:r1 2 %s 0 %s %s %s\n', tok, ttl, owner, fpl) .. string.sub(v, at, at + tonumber(fpl) - 1) .. ARGV[2]
redis.call('SET', KEYS[1], r, 'PX', math.max(tonumber(ttl), redis.call('PTTL', KEYS[1])))
return {'ok'}
`)

// releaseScript deletes the record of KEYS[1] begun with token ARGV[1],
// if it is in progress. It returns {'ok'}, {'none'}, {'stale', token} or
// {'completed'}.
var releaseScript = redis.NewScript(parseRecord + `
local v = redis.call('GET', KEYS[1])
if not v then return {'none'} end
local st, tok = parse(v)
if not st then st, tok = '2', '0' end
if tok ~= ARGV[1] then return {'stale', tok} end
if st == '2' then return {'completed'} end
redis.call('DEL', KEYS[1])
return {'ok'}
`)

// recordScript returns {value, TIME seconds, TIME microseconds, PTTL} of
// KEYS[1], or {} if it has none.
var recordScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return {} end
local t = redis.call('TIME')
return {v, t[1], t[2], redis.call('PTTL', KEYS[1])}
`)

// BeginContext starts work on key for the request identified by
// fingerprint (nil for none), as dedup.Store.Begin does: if the key is
// free, or its lease has ended by the server's clock, the caller acquires
// it with a fresh fencing token (see the package doc for why tokens only
// grow). Otherwise it reports who has it: another live lease, the
// completed result, or a fingerprint mismatch. A key marked by
// CheckAndMark is Completed whatever the fingerprint. A lease must be
// positive and no longer than ttl (0 means Options.DefaultTTL); both are
// rounded up to whole milliseconds. A takeover never shortens the key's
// remaining life.
func (s *Store) BeginContext(ctx context.Context, key, fingerprint []byte, lease, ttl time.Duration) (_ dedup.Claim, err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return dedup.Claim{}, err
	}
	if err := s.checkID(key); err != nil {
		return dedup.Claim{}, err
	}
	ttl, err = s.checkTTL(ttl)
	if err != nil {
		return dedup.Claim{}, err
	}
	if lease <= 0 || lease > ttl {
		return dedup.Claim{}, fmt.Errorf("%w: lease %v is outside (0, %v]", dedup.ErrInvalidTTL, lease, ttl)
	}
	if err := s.checkValue(fingerprint, nil); err != nil {
		return dedup.Claim{}, err
	}
	k, nonce := s.key(key), s.nonces.next().String()
	var c dedup.Claim
	err = s.onPrimary(ctx, k, func(cn conn) (bool, error) {
		res, err := beginScript.Run(ctx, cn, []string{k}, string(fingerprint), millis(lease), millis(ttl), nonce).Slice()
		if err != nil {
			return false, fmt.Errorf("redisstore: Begin %q: %w", key, s.sent(ctx, err))
		}
		outcome, _ := res[0].(string)
		r, err := decodeReply(k, res[1:])
		if err != nil {
			return false, err
		}
		c.Record = r
		switch outcome {
		case "acquired", "retried":
			c.Outcome = dedup.Acquired
		case "in-progress":
			c.Outcome = dedup.InProgress
		case "completed":
			c.Outcome = dedup.Completed
		case "mismatch":
			c.Outcome, c.Result = dedup.Mismatch, nil
		default:
			return false, fmt.Errorf("redisstore: Begin %q: the script answered %q", key, outcome)
		}
		return outcome == "retried", nil
	})
	if err != nil {
		return dedup.Claim{}, err
	}
	return c, nil
}

// CompleteContext stores result in the record of key, begun with token,
// and keeps it for the record's TTL from now, as dedup.Store.Complete
// does: it succeeds after the lease has ended as long as no other owner
// took the key over, and again with the same token; otherwise, or if the
// key was released, it fails with dedup.ErrStaleToken. A result that, with
// the record's fingerprint, passes Options.MaxValueSize is
// dedup.ErrValueTooLarge, and the record stays in progress.
func (s *Store) CompleteContext(ctx context.Context, key []byte, token uint64, result []byte) (err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return err
	}
	if err := s.checkID(key); err != nil {
		return err
	}
	if err := s.checkValue(nil, result); err != nil {
		return err
	}
	k := s.key(key)
	return s.onPrimary(ctx, k, func(cn conn) (bool, error) {
		res, err := completeScript.Run(ctx, cn, []string{k}, strconv.FormatUint(token, 10), string(result), s.opts.MaxValueSize).Slice()
		if err != nil {
			return false, fmt.Errorf("redisstore: Complete %q: %w", key, s.sent(ctx, err))
		}
		return false, settled(key, token, res)
	})
}

// ReleaseContext gives up the key begun with token, after a failure,
// leaving no mark: the next Begin acquires it. It fails with
// dedup.ErrStaleToken if another owner has taken the key over, or the
// work was completed. A Release that go-redis retried after its first
// attempt's reply was lost finds no record, and so fails with
// dedup.ErrStaleToken too, the key released all the same.
func (s *Store) ReleaseContext(ctx context.Context, key []byte, token uint64) (err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return err
	}
	if err := s.checkID(key); err != nil {
		return err
	}
	k := s.key(key)
	return s.onPrimary(ctx, k, func(cn conn) (bool, error) {
		res, err := releaseScript.Run(ctx, cn, []string{k}, strconv.FormatUint(token, 10)).Slice()
		if err != nil {
			return false, fmt.Errorf("redisstore: Release %q: %w", key, s.sent(ctx, err))
		}
		return false, settled(key, token, res)
	})
}

// settled turns the answer of completeScript or releaseScript into an
// error.
func settled(key []byte, token uint64, res []any) error {
	what, _ := res[0].(string)
	switch what {
	case "ok":
		return nil
	case "none":
		return fmt.Errorf("%w: %q has no record (expired or released)", dedup.ErrStaleToken, key)
	case "stale":
		return fmt.Errorf("%w: %q is held by token %v, not %d", dedup.ErrStaleToken, key, res[1], token)
	case "completed":
		return fmt.Errorf("%w: %q is completed and cannot be released", dedup.ErrStaleToken, key)
	case "too-large":
		return fmt.Errorf("%w: %v bytes with the fingerprint", dedup.ErrValueTooLarge, res[1])
	}
	return fmt.Errorf("redisstore: %q: a script answered %q", key, what)
}

// RecordContext returns the live idempotency record of key, if it has
// one. A key marked by CheckAndMark has a live mark but no record.
func (s *Store) RecordContext(ctx context.Context, key []byte) (_ dedup.Record, _ bool, err error) {
	defer s.counters.count(&err)
	if err := s.enter(ctx); err != nil {
		return dedup.Record{}, false, err
	}
	if err := s.checkID(key); err != nil {
		return dedup.Record{}, false, err
	}
	k := s.key(key)
	res, err := recordScript.Run(ctx, s.client, []string{k}).Slice()
	if err != nil {
		return dedup.Record{}, false, fmt.Errorf("redisstore: Record %q: %w", key, s.sent(ctx, err))
	}
	if len(res) == 0 || !strings.HasPrefix(res[0].(string), recordMagic) {
		return dedup.Record{}, false, nil
	}
	r, err := decodeReply(k, res)
	return r, err == nil, err
}

// decodeReply decodes a script's {value, TIME seconds, TIME
// microseconds, PTTL}: the record, or for a plain mark a completed record
// with no token, and its deadline.
func decodeReply(key string, res []any) (dedup.Record, error) {
	if len(res) != 4 {
		return dedup.Record{}, fmt.Errorf("redisstore: %q: a script answered %d values, not 4", key, len(res))
	}
	v, _ := res[0].(string)
	r, err := decodeRecord(key, v)
	if err != nil {
		return dedup.Record{}, err
	}
	sec, err1 := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(res[2]), 10, 64)
	pttl, ok := res[3].(int64)
	if err := errors.Join(err1, err2); err != nil || !ok {
		return dedup.Record{}, fmt.Errorf("redisstore: %q: a script answered the time %v.%v and PTTL %v: %v", key, res[1], res[2], res[3], err)
	}
	if pttl >= 0 { // -1 is a key with no expiry, written by someone else
		r.Deadline = time.Unix(sec, usec*1000).Truncate(time.Millisecond).Add(time.Duration(pttl) * time.Millisecond)
	}
	return r, nil
}

// decodeRecord decodes the value of key: a record, or any other value, a
// plain mark, which is completed work with no result.
func decodeRecord(key, v string) (dedup.Record, error) {
	rest, ok := strings.CutPrefix(v, recordMagic)
	if !ok {
		return dedup.Record{State: dedup.StateCompleted}, nil
	}
	header, body, ok := strings.Cut(rest, "\n")
	f := strings.Fields(header)
	if !ok || len(f) != 6 {
		return dedup.Record{}, fmt.Errorf("%w: %q holds a record with the header %q", dedup.ErrCorrupt, key, header)
	}
	state, err := strconv.ParseUint(f[0], 10, 8)
	token, err1 := strconv.ParseUint(f[1], 10, 64)
	lease, err2 := strconv.ParseInt(f[2], 10, 64)
	ttl, err3 := strconv.ParseInt(f[3], 10, 64)
	fpLen, err4 := strconv.Atoi(f[5])
	if err := errors.Join(err, err1, err2, err3, err4); err != nil || fpLen > len(body) {
		return dedup.Record{}, fmt.Errorf("%w: %q holds a record with the header %q: %v", dedup.ErrCorrupt, key, header, err)
	}
	r := dedup.Record{
		State:       dedup.RecordState(state),
		Token:       token,
		TTL:         time.Duration(ttl) * time.Millisecond,
		Fingerprint: []byte(body[:fpLen]),
		Result:      []byte(body[fpLen:]),
	}
	if lease != 0 {
		r.LeaseEnds = time.UnixMicro(lease)
	}
	if len(r.Fingerprint) == 0 {
		r.Fingerprint = nil
	}
	if len(r.Result) == 0 {
		r.Result = nil
	}
	return r, nil
}

// millis is d in whole milliseconds, rounded up: the resolution of
// Redis's expiry, so that nothing expires before its time.
func millis(d time.Duration) int64 {
	return (d + time.Millisecond - 1).Milliseconds()
}
