package dedup

// ScanChunk is how many keys one step of Scan reads, for the tests that
// check that Scan holds no more.
const ScanChunk = scanChunk
