package main

import (
	"testing"

	"github.com/joblock/joblock/internal/exampletest"
	"github.com/stretchr/testify/assert"
)

func TestExample(t *testing.T) {
	assert.Equal(t, 1, exampletest.Number(t, exampletest.Output(t, main), `CDN purged (\d+) time`))
}
