package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	out := exampletest.Output(t, main)
	made := exampletest.Number(t, out, `(\d+) calls made`)
	refused := exampletest.Number(t, out, `(\d+) refused`)
	assert.Equal(t, 5, made+refused)
	assert.LessOrEqual(t, made, 3, "one slot per second over a 2s wait")
	assert.Positive(t, refused)
	if made > 1 {
		// The slot lasts a second: two calls can never be closer.
		assert.GreaterOrEqual(t, exampletest.Number(t, out, `closest two (\d+) ms apart`), 950)
	}
}
