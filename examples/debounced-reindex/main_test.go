package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	out := exampletest.Output(t, main)
	assert.Equal(t, 20, exampletest.Number(t, out, `(\d+) edits`))
	assert.Equal(t, 1, exampletest.Number(t, out, `(\d+) reindex`), "many edits, one reindex")
	assert.Equal(t, 20, exampletest.Number(t, out, `of version (\d+)`), "with the last version")
}
