package dedup

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/seed42300104/dedup/index"
	"github.com/seed42300104/dedup/ttl"
)

// An idempotency record is the value of a key's mark. Begin writes it in
// progress, under a lease; Complete stores the result in it; Release
// forgets it. Each is one WAL record, applied under the store's write lock,
// so records have the guarantees of marks: atomic, durable before the call
// returns (under SyncAlways), and crash-safe.
//
// A key marked by CheckAndMark has no record: Begin treats it as completed
// work with no result, so that the two APIs agree on what "processed"
// means.

// RecordState is the state of an idempotency record.
type RecordState uint8

// The states of a record. Part of the on-disk format.
const (
	// StateInProgress: Begin acquired the key; its lease may have ended.
	StateInProgress RecordState = 1
	// StateCompleted: Complete stored the result.
	StateCompleted RecordState = 2
)

func (s RecordState) String() string {
	switch s {
	case StateInProgress:
		return "in-progress"
	case StateCompleted:
		return "completed"
	}
	return fmt.Sprintf("RecordState(%d)", uint8(s))
}

// Record is a key's idempotency record.
type Record struct {
	State RecordState `json:"state"`
	// Token is the fencing token of the lease that began the work: Complete
	// and Release must present it. Tokens only grow, across takeovers,
	// reopens and crashes.
	Token uint64 `json:"token"`
	// LeaseEnds is when, in progress, another owner may take the key over.
	LeaseEnds time.Time `json:"lease_ends,omitzero"`
	// TTL is how long the completed record is kept.
	TTL time.Duration `json:"ttl_ns"`
	// Fingerprint identifies the request the key was begun for.
	Fingerprint []byte `json:"fingerprint,omitempty"`
	// Result is what Complete stored.
	Result []byte `json:"result,omitempty"`
	// Deadline is when the record expires and the key is new again.
	Deadline time.Time `json:"deadline"`
}

// Outcome is what Begin found.
type Outcome int

const (
	// Acquired: the caller owns the key until the lease ends, and must
	// Complete or Release it with the token.
	Acquired Outcome = iota + 1
	// InProgress: another owner's lease is live.
	InProgress
	// Completed: the work is done; the record holds its result.
	Completed
	// Mismatch: the key was begun with another fingerprint (none being
	// another than some). The record's result is not returned.
	Mismatch
)

func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case InProgress:
		return "in-progress"
	case Completed:
		return "completed"
	case Mismatch:
		return "mismatch"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Claim is Begin's answer: its outcome and the key's record as it stands.
type Claim struct {
	Outcome Outcome
	Record
}

// Begin starts work on key for the request identified by fingerprint (nil
// for none). If the key is free, or its lease has ended, the caller
// acquires it: a new in-progress record is written with a lease of the
// given length and a fresh fencing token, kept for ttl (0 means
// Options.DefaultTTL). Otherwise Begin reports who has it: another live
// lease, the completed result, or a fingerprint mismatch. Fingerprints
// match only if they are equal, so a key begun without one is a Mismatch
// for a request with one, and the other way round; a key marked by
// CheckAndMark has no record, and is Completed whatever the fingerprint.
// A lease must be positive and no longer than ttl.
func (s *Store) Begin(key, fingerprint []byte, lease, ttl time.Duration) (Claim, error) {
	return s.BeginContext(context.Background(), key, fingerprint, lease, ttl)
}

// begin is the atomic part of Begin; without an error the call is
// admitted (see enter).
func (s *Store) begin(ctx context.Context, key, fingerprint []byte, lease, keep time.Duration) (_ Claim, _ uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(ctx); err != nil {
		return Claim{}, 0, err
	}
	defer s.leaveOnError(&err)
	k := s.idx.Key(key)
	for {
		now := s.opts.Clock.Now()
		e, live, err := s.idx.Lookup(k, s.opts.Clock)
		if err != nil {
			return Claim{}, 0, storeError(err)
		}
		if live {
			r, err := decodeRecord(e)
			if err != nil {
				return Claim{}, 0, err
			}
			// A plain mark (CheckAndMark's, with no record) is completed work
			// whatever the fingerprint: it has none to compare. A record's
			// fingerprint must equal the caller's, an empty one included, or
			// a key begun without a fingerprint would answer any request.
			switch {
			case len(e.Value) > 0 && !bytes.Equal(fingerprint, r.Fingerprint):
				r.Result = nil
				return Claim{Mismatch, r}, e.LSN, nil
			case r.State == StateCompleted:
				return Claim{Completed, r}, e.LSN, nil
			case now.Before(r.LeaseEnds):
				return Claim{InProgress, r}, e.LSN, nil
			}
			// The lease has ended: take the key over.
		}
		if waited, err := s.awaitRoom(ctx); err != nil {
			return Claim{}, 0, err
		} else if waited {
			continue // the key may have changed meanwhile
		}
		// The token is the LSN of the record that grants the lease: writes
		// are serialized under s.mu, so it is the WAL's next.
		r := Record{
			State: StateInProgress, Token: s.log.LastLSN() + 1, LeaseEnds: now.Add(lease),
			TTL: keep, Fingerprint: fingerprint,
		}
		lsn, deadline, err := s.saveRecord(k, e, live, now, r)
		if err != nil {
			return Claim{}, 0, err
		}
		if lsn != r.Token {
			panic(fmt.Sprintf("dedup: a record written as LSN %d got LSN %d", r.Token, lsn))
		}
		r.Deadline = deadline.Time()
		return Claim{Acquired, r}, lsn, nil
	}
}

// Complete stores result in the record of key, begun with token, and keeps
// it for the record's TTL from now. It succeeds even after the lease has
// ended, as long as no other owner has taken the key over; otherwise, or if
// the key was released, it fails with ErrStaleToken. Completing again with
// the same token changes nothing and succeeds. A result that, with the
// record's fingerprint, passes Options.MaxValueSize is ErrValueTooLarge,
// and the record stays in progress.
func (s *Store) Complete(key []byte, token uint64, result []byte) error {
	return s.CompleteContext(context.Background(), key, token, result)
}

// complete is the atomic part of Complete; without an error the call is
// admitted (see enter).
func (s *Store) complete(ctx context.Context, key []byte, token uint64, result []byte) (uint64, error) {
	return s.settle(ctx, key, token, func(k index.Key, e index.Entry, now time.Time, r Record) (uint64, error) {
		if r.State == StateCompleted {
			return e.LSN, nil
		}
		if err := s.checkValue(r.Fingerprint, result); err != nil {
			return 0, err
		}
		r.State, r.LeaseEnds, r.Result = StateCompleted, time.Time{}, result
		lsn, _, err := s.saveRecord(k, e, true, now, r)
		return lsn, err
	})
}

// Release gives up the key begun with token, after a failure, leaving no
// mark: the next Begin acquires it. It fails with ErrStaleToken if another
// owner has taken the key over, or the work was completed.
func (s *Store) Release(key []byte, token uint64) error {
	return s.ReleaseContext(context.Background(), key, token)
}

// release is the atomic part of Release; without an error the call is
// admitted (see enter).
func (s *Store) release(ctx context.Context, key []byte, token uint64) (uint64, error) {
	return s.settle(ctx, key, token, func(k index.Key, _ index.Entry, _ time.Time, r Record) (uint64, error) {
		if r.State == StateCompleted {
			return 0, fmt.Errorf("%w: %q is completed and cannot be released", ErrStaleToken, k.ID)
		}
		s.batch.Reset()
		s.batch.Forget(k.ID)
		return s.append()
	})
}

// settle runs fn, under the write lock, on the live record of key if token
// began it; fn returns the LSN to wait for. A call held back by the
// memtable (see awaitRoom) looks the record up again once it may write.
// Without an error the call is admitted (see enter).
func (s *Store) settle(ctx context.Context, key []byte, token uint64, fn func(index.Key, index.Entry, time.Time, Record) (uint64, error)) (_ uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leaveOnError(&err)
	k := s.idx.Key(key)
	for {
		e, live, err := s.idx.Lookup(k, s.opts.Clock)
		if err != nil {
			return 0, storeError(err)
		}
		if !live {
			return 0, fmt.Errorf("%w: %q has no record (expired or released)", ErrStaleToken, key)
		}
		r, err := decodeRecord(e)
		if err != nil {
			return 0, err
		}
		if r.Token != token {
			return 0, fmt.Errorf("%w: %q is held by token %d, not %d", ErrStaleToken, key, r.Token, token)
		}
		if waited, err := s.awaitRoom(ctx); err != nil {
			return 0, err
		} else if waited {
			continue // the record may have changed meanwhile
		}
		return fn(k, e, s.opts.Clock.Now(), r)
	}
}

// saveRecord writes r as the newest version of k's mark, kept for r.TTL
// from now, and returns its LSN and deadline. A version replacing a live
// one (prev) is given a later deadline than prev's, so that it answers
// whatever generation each lives in. The caller holds s.mu exclusively.
func (s *Store) saveRecord(k index.Key, prev index.Entry, replaces bool, now time.Time, r Record) (uint64, ttl.Deadline, error) {
	deadline, gen, err := expiry(now, r.TTL)
	if err != nil {
		return 0, 0, err
	}
	if replaces && deadline <= prev.Deadline {
		deadline = prev.Deadline + 1
		gen = ttl.GenOf(r.TTL, deadline)
		if err := representable(gen); err != nil {
			return 0, 0, err
		}
	}
	s.batch.Reset()
	s.batch.Time = now.UnixNano()
	if replaces {
		s.batch.Extend(k, gen, deadline, encodeRecord(r))
	} else {
		if err := s.makeRoom(1); err != nil {
			return 0, 0, err
		}
		s.batch.Mark(k, gen, deadline, encodeRecord(r))
	}
	lsn, err := s.append()
	return lsn, deadline, err
}

// Record returns the live idempotency record of key, if it has one. A key
// marked by CheckAndMark has a live mark but no record.
func (s *Store) Record(key []byte) (Record, bool, error) {
	return s.RecordContext(context.Background(), key)
}

// recordOf returns the record of an entry, or nil for a plain mark.
func recordOf(e index.Entry) (*Record, error) {
	if len(e.Value) == 0 {
		return nil, nil
	}
	r, err := decodeRecord(e)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// MaxValueSize is the most an idempotency record may store, its
// fingerprint and result together, in bytes: Options.MaxValueSize.
func (s *Store) MaxValueSize() int { return s.opts.MaxValueSize }

// checkValue bounds what a record stores.
func (s *Store) checkValue(fingerprint, result []byte) error {
	if n := len(fingerprint) + len(result); n > s.opts.MaxValueSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, n, s.opts.MaxValueSize)
	}
	return nil
}

// Record encoding, the value of a key's mark:
//
//	| version 1 (1B) | state (1B) | token (8B) | lease ends (8B) | TTL (8B) |
//	| len(fingerprint) uvarint | fingerprint | result |
//
// Integers are little-endian; the lease end is Unix nanoseconds, zero
// once completed. Part of the on-disk format.
const recordVersion = 1

func encodeRecord(r Record) []byte {
	b := make([]byte, 0, 26+binary.MaxVarintLen64+len(r.Fingerprint)+len(r.Result))
	b = append(b, recordVersion, byte(r.State))
	b = binary.LittleEndian.AppendUint64(b, r.Token)
	var lease int64
	if !r.LeaseEnds.IsZero() {
		lease = r.LeaseEnds.UnixNano()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(lease))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.TTL))
	b = binary.AppendUvarint(b, uint64(len(r.Fingerprint)))
	b = append(b, r.Fingerprint...)
	return append(b, r.Result...)
}

// decodeRecord decodes the record of a live entry. An entry without a
// value is a plain mark: completed work with no result.
func decodeRecord(e index.Entry) (Record, error) {
	r := Record{Deadline: e.Deadline.Time()}
	v := e.Value
	if len(v) == 0 {
		r.State = StateCompleted
		return r, nil
	}
	if len(v) < 26 || v[0] != recordVersion || (RecordState(v[1]) != StateInProgress && RecordState(v[1]) != StateCompleted) {
		return Record{}, fmt.Errorf("%w: a record of %d bytes, version %d, state %d, WAL LSN %d", ErrCorrupt, len(v), v[0], v[min(1, len(v)-1)], e.LSN)
	}
	r.State = RecordState(v[1])
	r.Token = binary.LittleEndian.Uint64(v[2:])
	if lease := int64(binary.LittleEndian.Uint64(v[10:])); lease != 0 {
		r.LeaseEnds = time.Unix(0, lease)
	}
	r.TTL = time.Duration(binary.LittleEndian.Uint64(v[18:]))
	n, w := binary.Uvarint(v[26:])
	if w <= 0 || n > uint64(len(v)-26-w) {
		return Record{}, fmt.Errorf("%w: a record with a bad fingerprint length, WAL LSN %d", ErrCorrupt, e.LSN)
	}
	rest := v[26+w:]
	r.Fingerprint, r.Result = rest[:n:n], rest[n:]
	return r, nil
}
