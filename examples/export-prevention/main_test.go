package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	out := exampletest.Output(t, main)
	assert.Contains(t, out, "second export: export already running")
	assert.Contains(t, out, "first export: <nil>")
	assert.Contains(t, out, "export after it finished: <nil>")
}
