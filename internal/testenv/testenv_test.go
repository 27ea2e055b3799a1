package testenv

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestChildEnviron(t *testing.T) {
	t.Setenv("GORACE", "halt_on_error=1")
	env := ChildEnviron("X=1", "GORACE=log_path=/dev/null")
	assert.Equal(t, []string{"GORACE=halt_on_error=1 atexit_sleep_ms=0", "X=1", "GORACE=log_path=/dev/null"}, env[len(env)-3:],
		"the caller's GORACE options kept, no exit sleep, extra last")
}
