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
// the Grafana dashboard and the alerting rules in examples/grafana: each
// dedup_* name in them is a series the collectors describe (a
// histogram's by its _bucket, _sum or _count), so that renaming a series
// cannot leave a panel blank or an alert silent unnoticed.
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

	name := regexp.MustCompile(`dedup_[a-z_]+`)
	series := func(expr string) []string {
		var out []string
		for _, n := range name.FindAllString(expr, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suffix); ok && described[base] {
					n = base
				}
			}
			out = append(out, n)
		}
		return out
	}

	shown := map[string]bool{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			for _, s := range series(target.Expr) {
				assert.True(t, described[s], "panel %q queries %s, which no collector exports", p.Title, s)
				shown[s] = true
			}
		}
	}

	rules, err := os.ReadFile("../examples/grafana/alerts.yml")
	require.NoError(t, err)
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)\n\s*expr: (.+)$`).FindAllStringSubmatch(string(rules), -1)
	require.Len(t, alerts, strings.Count(string(rules), "- alert:"), "every rule's expr follows its alert line")
	for _, a := range alerts {
		watched := series(a[2])
		require.NotEmpty(t, watched, a[1])
		for _, s := range watched {
			assert.True(t, described[s], "alert %s watches %s, which no collector exports", a[1], s)
			assert.True(t, shown[s], "alert %s watches %s, which the dashboard does not show", a[1], s)
		}
	}
}
