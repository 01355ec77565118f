package bench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// WriteResults writes results to dir as results.json (what -o json
// prints) and chart.svg (IDs/s per row, workloads against baselines).
func WriteResults(dir string, results []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return Chart(results, filepath.Join(dir, "chart.svg"))
}

// Chart draws IDs/s per row on a log scale, one line per row, the store's
// workloads as circles and the baselines as triangles, and saves it to
// path in the format its extension names (.svg, .png).
func Chart(results []Result, path string) error {
	p := plot.New()
	if len(results) > 0 {
		r := results[0]
		p.Title.Text = fmt.Sprintf("IDs/s, %d %s IDs, batch %d, %d goroutines, sync %s",
			r.IDs, r.Shape, r.Batch, r.Concurrency, r.Sync)
	}
	p.X.Label.Text = "IDs per second (log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = rateTicks{}
	p.Add(plotter.NewGrid())

	var ran []Result
	for _, r := range results {
		if r.Skipped == "" && r.IDsPerSecond() > 0 {
			ran = append(ran, r)
		}
	}
	if len(ran) == 0 {
		return fmt.Errorf("bench: no row ran, nothing to chart")
	}
	var names []string
	var store, base plotter.XYs
	p.X.Min, p.X.Max = ran[0].IDsPerSecond(), ran[0].IDsPerSecond()
	for i, r := range ran {
		p.X.Min, p.X.Max = min(p.X.Min, r.IDsPerSecond()/2), max(p.X.Max, r.IDsPerSecond()*3)
		names = append(names, r.Workload)
		xy := plotter.XY{X: r.IDsPerSecond(), Y: float64(len(ran) - 1 - i)}
		if r.Baseline {
			base = append(base, xy)
		} else {
			store = append(store, xy)
		}
	}
	// NominalY counts from the bottom: reverse, so the table's order reads
	// top down.
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	p.NominalY(names...)
	for _, s := range []struct {
		label string
		xys   plotter.XYs
		glyph draw.GlyphDrawer
		color color.Color
	}{
		{"dedup store", store, draw.CircleGlyph{}, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}},
		{"baseline", base, draw.PyramidGlyph{}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}},
	} {
		if len(s.xys) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(s.xys)
		if err != nil {
			return err
		}
		sc.GlyphStyle = draw.GlyphStyle{Shape: s.glyph, Color: s.color, Radius: vg.Points(4)}
		p.Add(sc)
		p.Legend.Add(s.label, sc)
	}
	p.Legend.Top = true
	return p.Save(8*vg.Inch, vg.Length(2+0.35*float64(len(names)))*vg.Inch, path)
}

// rateTicks are log ticks labelled 10K, 100K, 1M...
type rateTicks struct{}

func (rateTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.LogTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = Rate(t.Value)
		}
	}
	return ticks
}

// Rate prints a rate with a K or M suffix and three significant digits,
// as the table and the chart's axis show it.
func Rate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.3gM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.3gK", x/1e3)
	}
	return fmt.Sprintf("%.3g", x)
}
