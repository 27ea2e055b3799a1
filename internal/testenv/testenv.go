// Package testenv decides which of the slow tests a test run includes, and
// the environment of the test-binary children the cross-process tests start.
package testenv

import (
	"os"
	"strings"
	"testing"
)

// SoakVar is the environment variable that turns the soak tests on: tests
// that take a minute or more because they wait on real timeouts (asynq's
// 30s task lease, crash recovery). CI sets it; a local run leaves them out
// unless it is set to 1.
const SoakVar = "JOBLOCK_SOAK"

// Soak skips t, saying how to run it, unless SoakVar is 1. what names what
// the test waits for.
func Soak(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(SoakVar) != "1" {
		t.Skipf("soak test (%s): run with %s=1", what, SoakVar)
	}
}

// ChildEnviron returns this process's environment plus extra, for a child
// that is the test binary run again. Under -race, the race runtime sleeps
// atexit_sleep_ms (1s by default) before a process exits, and the
// cross-process tests start children by the dozen: theirs is set to 0,
// after any GORACE options of the caller's, so each child costs the time
// it runs, not a second more. extra comes last and wins over both.
func ChildEnviron(extra ...string) []string {
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append(append(os.Environ(), "GORACE="+gorace), extra...)
}
