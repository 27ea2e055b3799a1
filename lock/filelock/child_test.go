package filelock_test

// runChild runs this test binary as a helper process when asked to through
// the environment, and reports whether it did.
func runChild() bool { return false }
