//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le))

package aio

// Syncer is not available off little-endian Linux; New always fails.
type Syncer struct{}

// New returns ErrUnsupported.
func New() (*Syncer, error) { return nil, ErrUnsupported }

// Start is never reached: New fails.
func (*Syncer) Start(uintptr, uint64) error { return ErrUnsupported }

// Wait is never reached: New fails.
func (*Syncer) Wait(out []Completion) ([]Completion, error) { return out, ErrUnsupported }

// Close is never reached: New fails.
func (*Syncer) Close() error { return nil }

// Poll is never reached: New fails.
func (*Syncer) Poll(out []Completion) ([]Completion, error) { return out, ErrUnsupported }
