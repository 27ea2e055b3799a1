// Package testenv decides which of the slow tests a test run includes.
package testenv

import (
	"os"
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
