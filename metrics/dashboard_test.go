package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed42300104/dedup/metrics"
)

// TestDashboardUsesOnlySeriesTheCollectorsExport reads every query of
// the Grafana dashboard in examples/grafana: each dedup_* name in them
// is a series the collectors describe (a histogram's by its _bucket,
// _sum or _count), so that renaming a series cannot leave the dashboard
// blank unnoticed.
func TestDashboardUsesOnlySeriesTheCollectorsExport(t *testing.T) {
	raw, err := os.ReadFile("../examples/grafana/dedup.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))

	described := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	metrics.NewCollector(nil, nil).Describe(ch)
	metrics.NewIdempotencyCollector(nil, nil).Describe(ch)
	close(ch)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		described[fqName.FindStringSubmatch(d.String())[1]] = true
	}

	used := map[string]bool{}
	name := regexp.MustCompile(`dedup_[a-z_]+`)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			for _, n := range name.FindAllString(target.Expr, -1) {
				series := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(n, suffix); ok && described[base] {
						series = base
					}
				}
				assert.True(t, described[series], "panel %q queries %s, which no collector exports", p.Title, n)
				used[series] = true
			}
		}
	}
	for _, must := range []string{"dedup_effective_window_seconds", "dedup_wal_sync_duration_seconds", "dedup_fail_stopped"} {
		assert.True(t, used[must], "the dashboard shows %s, which the README's alerts watch", must)
	}
}
