package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	out := exampletest.Output(t, main)
	assert.GreaterOrEqual(t, exampletest.Number(t, out, `(\d+) ticks`), 2, "too few ticks to show anything")
	assert.Equal(t, 0, exampletest.Number(t, out, `(\d+) run on both servers`))
}
