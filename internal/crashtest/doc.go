// Package crashtest holds the slow tests of the store's promises under
// damage: power loss at every write (CrashableMem), injected I/O errors
// (errorfs), kill -9 of real processes, damaged files, and churn. They use
// only the public API, as a user's process would, and live apart from the
// root package's tests so that `go test .` stays the fast API suite.
//
// DEDUP_CRASH_CYCLES sets the kill -9 cycles of the long runs.
package crashtest
