package dedup

import (
	"context"
	"time"
)

// Backend is the deduplication API that every backend offers: the embedded
// Store, and package redisstore's Store on Redis (standalone, Sentinel or
// Cluster). Code written against it, such as package idempotency, runs on
// either, and changes only the constructor.
//
// Each method means what the Store method of the same name without the
// Context suffix means, with the same sentinel errors for bad input. A call
// that returns an error has not answered: it never reports an ID as new
// unless the mark was made. A call refused before it took effect, because
// its context ended while it waited, returns the context's error and has no
// effect.
type Backend interface {
	CheckAndMarkContext(ctx context.Context, id []byte, ttl time.Duration) (isNew bool, err error)
	CheckAndMarkBatchContext(ctx context.Context, ids [][]byte, ttl time.Duration) (isNew []bool, err error)
	SeenContext(ctx context.Context, id []byte) (bool, error)
	ForgetContext(ctx context.Context, id []byte) error

	BeginContext(ctx context.Context, key, fingerprint []byte, lease, ttl time.Duration) (Claim, error)
	CompleteContext(ctx context.Context, key []byte, token uint64, result []byte) error
	ReleaseContext(ctx context.Context, key []byte, token uint64) error
	RecordContext(ctx context.Context, key []byte) (Record, bool, error)

	// MaxValueSize is the most an idempotency record may store, its
	// fingerprint and result together, in bytes.
	MaxValueSize() int
	Close() error
}
