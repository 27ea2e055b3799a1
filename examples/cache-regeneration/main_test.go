package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	out := exampletest.Output(t, main)
	assert.Equal(t, 1, exampletest.Number(t, out, `regenerated (\d+) time`))
	assert.Equal(t, 4, exampletest.Number(t, out, `(\d+) request\(s\) served the stale cache`))
}
