// Package testutil holds the scaffolding this module's tests share: the
// time fake clocks start at, a logger that records for assertions, the
// operations a crash sweep visits, and the one way a test re-executes its
// test binary as a child process.
//
// It imports no package of this module, so that every package's internal
// tests can use it; the store opener, which needs the root package, is in
// storetest.
package testutil

import "time"

// Epoch is where fake clocks start: a realistic Unix time, so that
// deadlines and generations look like production ones.
var Epoch = time.Unix(1_700_000_000, 0)
