// Package aio starts fdatasyncs that complete in the background, through
// Linux native AIO (IOCB_CMD_FDSYNC). A Go thread blocked in fdatasync
// holds its processor until the scheduler notices; on a store busy with
// checkpoints that delays the sync, or the work behind it, by hundreds of
// microseconds. Here the kernel runs the sync on its own worker, and the
// goroutine waiting for completions is parked in the network poller.
package aio

import "errors"

// ErrUnsupported is returned by New where native AIO is missing or
// refused; callers fall back to a synchronous fdatasync.
var ErrUnsupported = errors.New("aio: native fdatasync not supported")

// ErrUnexpected marks a completion whose result no fdatasync returns: the
// sync it reports cannot be taken for a success.
var ErrUnexpected = errors.New("aio: unexpected completion")

// ErrClosed is returned by Wait once the Syncer is closed.
var ErrClosed = errors.New("aio: closed")

// Completion is the outcome of one sync: the tag it was started with, and
// the error fdatasync returned, if any.
type Completion struct {
	Tag uint64
	Err error
}
