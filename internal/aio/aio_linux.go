//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le)

package aio

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iocb is the kernel's struct iocb on the little-endian machines this file
// builds for.
type iocb struct {
	data      uint64
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqprio   int16
	fildes    uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

// ioEvent is the kernel's struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

const (
	cmdFdsync  = 3 // IOCB_CMD_FDSYNC
	flagResfd  = 1 // IOCB_FLAG_RESFD: signal the eventfd on completion
	maxPending = 8
)

// ring is the head of the completion ring the kernel maps at the address
// of an aio_context_t (struct aio_ring): completions wait in it between
// head and tail.
type ring struct {
	id, nr, head, tail uint32
}

// Syncer starts fdatasyncs and reports their completions. Its methods are
// safe for concurrent use; each completion is reported once, by Wait or
// by Poll.
type Syncer struct {
	ctx    uintptr  // aio_context_t
	ring   *ring    // the same address, for Poll to look without a system call
	notify *os.File // eventfd the kernel signals per completion
	// notifyFd is notify's descriptor, kept so that Start need not read
	// notify while Close closes it.
	notifyFd uint32
	mu       sync.Mutex // guards ctx against Close, and events
	events   [maxPending]ioEvent
}

// New sets up an AIO context and its completion eventfd. It returns
// ErrUnsupported if the kernel refuses either.
func New() (*Syncer, error) {
	var ctx uintptr
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, maxPending, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return nil, fmt.Errorf("%w: io_setup: %v", ErrUnsupported, e)
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Syscall(unix.SYS_IO_DESTROY, ctx, 0, 0)
		return nil, fmt.Errorf("%w: eventfd: %v", ErrUnsupported, err)
	}
	// A non-blocking descriptor makes the os.File pollable: Wait parks in
	// the network poller rather than in a system call.
	return &Syncer{
		ctx:      ctx,
		ring:     *(**ring)(unsafe.Pointer(&ctx)),
		notify:   os.NewFile(uintptr(fd), "aio-eventfd"),
		notifyFd: uint32(fd),
	}, nil
}

// Start begins an fdatasync of fd. Every byte written to fd before Start
// is durable when the Completion carrying tag arrives without an error.
func (s *Syncer) Start(fd uintptr, tag uint64) error {
	cb := iocb{data: tag, opcode: cmdFdsync, fildes: uint32(fd), flags: flagResfd, resfd: s.notifyFd}
	p := &cb
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == 0 {
		return ErrClosed
	}
	// The kernel copies the iocb during the call; cb need not outlive it.
	var n uintptr
	e := unix.EINTR // the Go runtime's preemption signal can interrupt either call
	for e == unix.EINTR {
		n, _, e = unix.Syscall(unix.SYS_IO_SUBMIT, s.ctx, 1, uintptr(unsafe.Pointer(&p)))
	}
	switch {
	case e != 0:
		return fmt.Errorf("aio: io_submit fdatasync: %w", e)
	case n != 1:
		return fmt.Errorf("aio: io_submit fdatasync: submitted %d of 1", n)
	}
	return nil
}

// Wait blocks until at least one sync has completed and appends the
// completions to out. After Close it returns ErrClosed.
func (s *Syncer) Wait(out []Completion) ([]Completion, error) {
	var b [8]byte
	for {
		if _, err := s.notify.Read(b[:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return out, ErrClosed
			}
			return out, fmt.Errorf("aio: reading the completion eventfd: %w", err)
		}
		n := len(out)
		var err error
		if out, err = s.reap(out); err != nil || len(out) > n {
			return out, err
		}
		// Poll took these completions first: wait for the next.
	}
}

// Poll appends the completions already posted to out, without blocking.
// A goroutine that is running anyway can take a completion this way
// before the poller that Wait parks is scheduled.
func (s *Syncer) Poll(out []Completion) ([]Completion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx != 0 && atomic.LoadUint32(&s.ring.head) == atomic.LoadUint32(&s.ring.tail) {
		return out, nil
	}
	return s.reapLocked(out)
}

func (s *Syncer) reap(out []Completion) ([]Completion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reapLocked(out)
}

// reapLocked appends the completions already posted to out, without
// blocking. The caller holds s.mu.
func (s *Syncer) reapLocked(out []Completion) ([]Completion, error) {
	if s.ctx == 0 {
		return out, ErrClosed
	}
	var zero unix.Timespec
	var n uintptr
	e := unix.EINTR // with nothing to reap, a pending signal makes it EINTR
	for e == unix.EINTR {
		n, _, e = unix.Syscall6(unix.SYS_IO_GETEVENTS, s.ctx, 0, maxPending,
			uintptr(unsafe.Pointer(&s.events[0])), uintptr(unsafe.Pointer(&zero)), 0)
	}
	if e != 0 {
		return out, fmt.Errorf("aio: io_getevents: %w", e)
	}
	for _, ev := range s.events[:n] {
		out = append(out, completionOf(ev))
	}
	return out, nil
}

// completionOf reads an event: res is what fdatasync returned, 0 or a
// negated errno. Any other result is none a sync can have, so it is
// reported as a failure rather than taken for a success.
func completionOf(ev ioEvent) Completion {
	c := Completion{Tag: ev.data}
	switch {
	case ev.res < 0:
		c.Err = fmt.Errorf("aio: fdatasync: %w", unix.Errno(-ev.res))
	case ev.res > 0:
		c.Err = fmt.Errorf("%w: fdatasync completed with result %d", ErrUnexpected, ev.res)
	}
	return c
}

// Close waits for the syncs in flight, releases the context, and makes
// Wait return ErrClosed. Closing twice is fine.
func (s *Syncer) Close() error {
	s.mu.Lock()
	ctx := s.ctx
	s.ctx, s.ring = 0, nil // the ring is unmapped by io_destroy
	s.mu.Unlock()
	if ctx == 0 {
		return nil // closed before
	}
	var err error
	// io_destroy waits for requests that cannot be cancelled, as syncs
	// cannot.
	if _, _, e := unix.Syscall(unix.SYS_IO_DESTROY, ctx, 0, 0); e != 0 {
		err = fmt.Errorf("aio: io_destroy: %w", e)
	}
	return errors.Join(err, s.notify.Close())
}
