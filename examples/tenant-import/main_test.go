package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	out := exampletest.Output(t, main)
	assert.Equal(t, 15, exampletest.Number(t, out, `(\d+) of 15 imports ran`), "every import runs")
	assert.Equal(t, 2, exampletest.Number(t, out, `acme: 10 imports, at most (\d+) at once`), "ten uploads, two at a time")
	assert.LessOrEqual(t, exampletest.Number(t, out, `globex: 3 imports, at most (\d+) at once`), 2)
	assert.LessOrEqual(t, exampletest.Number(t, out, `initech: 2 imports, at most (\d+) at once`), 2)
}
