package redistest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/internal/redistest"
)

func TestStartedServerKeepsAcknowledgedWritesAcrossKill(t *testing.T) {
	s := redistest.Start(t, redistest.Config{AppendFsyncAlways: true})
	ctx := context.Background()
	require.NoError(t, s.Client().Set(ctx, "k", "v", 0).Err())
	s.Kill()
	s.Restart()
	v, err := s.Client().Get(ctx, "k").Result()
	require.NoError(t, err)
	assert.Equal(t, "v", v)
}

func TestClusterServesEverySlotWithAReplicaEach(t *testing.T) {
	c := redistest.StartCluster(t, redistest.Config{})
	ctx := context.Background()
	cc := c.Client(t)
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		require.NoError(t, cc.Set(ctx, k, k, 0).Err())
	}
	primary, replica := c.Primary(t, "a")
	assert.NotEqual(t, primary.Addr, replica.Addr)
	role, err := replica.Client().Do(ctx, "role").Slice()
	require.NoError(t, err)
	assert.Equal(t, "slave", role[0])
}
