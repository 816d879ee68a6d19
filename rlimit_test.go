package chihaya

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRaiseFileLimit(t *testing.T) {
	before, after, err := raiseFileLimit()
	require.NoError(t, err)
	assert.Equal(t, after.hard, after.soft, "the soft limit is raised to the hard one")
	assert.Equal(t, before.hard, after.hard, "the hard limit stays")
	assert.GreaterOrEqual(t, after.soft, before.soft)
	now, err := readFileLimit()
	require.NoError(t, err)
	assert.Equal(t, after, now)
}
