package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// marksTicks are the sizes of c, labelled 1M, 10M...
func marksTicks(c Curve) plot.ConstantTicks {
	var ticks plot.ConstantTicks
	for _, pt := range c.Points {
		ticks = append(ticks, plot.Tick{Value: float64(pt.Marks), Label: Rate(float64(pt.Marks))})
	}
	return ticks
}

// ticks125 are log ticks labelled at 1, 2 and 5 times each power of ten,
// so that a range of less than a decade is labelled.
type ticks125 struct{ label func(float64) string }

// plain labels a tick with its value.
func plain(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func (tk ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for p := math.Pow(10, math.Floor(math.Log10(lo))); p <= hi; p *= 10 {
		for m := 1; m < 10; m++ {
			v := float64(m) * p
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = tk.label(v)
			}
			ticks = append(ticks, t)
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

// WriteCurve writes c to dir as curve.json (what -o json prints) and
// curve.svg (CurveChart).
func WriteCurve(dir string, c Curve) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "curve.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return CurveChart(c, filepath.Join(dir, "curve.svg"))
}

// Issue 16's targets, drawn on the curve.
const (
	targetDiskPerMark = 28
	targetRSSPerMark  = 4
)

// curveLine is a line of the curve chart: y at each point.
type curveLine struct {
	label string
	kind  lineKind
	color color.Color
	y     func(CurvePoint) float64
}

// lineKind says how a line is drawn: the store's solid with circles,
// baselines dashed with triangles, targets dotted.
type lineKind int

const (
	storeLine lineKind = iota
	baselineLine
	targetLine
)

// CurveChart draws c as three panels over the marks, on log scales: IDs/s
// per row, disk bytes per mark and resident memory per mark, the store's
// lines solid and the baselines' dashed, each baseline in the color of
// the row it bounds, and issue 16's targets dotted. It saves the chart to
// path in the format its extension names (.svg, .png).
func CurveChart(c Curve, path string) error {
	blue := color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange := color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	green := color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	purple := color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	gray := color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	field := func(row string, f func(Result) float64) func(CurvePoint) float64 {
		return func(pt CurvePoint) float64 {
			for _, r := range pt.Rows {
				if r.Workload == row {
					return f(r)
				}
			}
			return 0
		}
	}
	perMark := func(f func(Memory) float64) func(CurvePoint) float64 {
		return func(pt CurvePoint) float64 { return f(pt.Memory) / float64(pt.Marks) }
	}
	constant := func(v float64) func(CurvePoint) float64 { return func(CurvePoint) float64 { return v } }
	rate := func(row string) func(CurvePoint) float64 { return field(row, Result.IDsPerSecond) }
	disk := func(r Result) float64 { return r.DiskPerMark }
	mem := func(r Result) float64 { return r.RSSPerMark }

	var title string
	if len(c.Points) > 0 && len(c.Points[0].Rows) > 0 {
		r := c.Points[0].Rows[0]
		title = fmt.Sprintf(", %s IDs, batch %d, %d goroutines, sync %s", r.Shape, r.Batch, r.Concurrency, r.Sync)
	}
	var panels []*plot.Plot
	for _, panel := range []struct {
		title string
		ticks plot.Ticker
		lines []curveLine
	}{
		{"IDs per second" + title, ticks125{Rate}, []curveLine{
			{"new", storeLine, blue, rate("new")},
			{"cold-duplicates", storeLine, orange, rate("cold-duplicates")},
			{"seen-absent", storeLine, green, rate("seen-absent")},
			{"open (marks recovered/s)", storeLine, purple, rate("open")},
			{"pebble-batch-insert", baselineLine, blue, rate("pebble-batch-insert")},
			{"pebble-get", baselineLine, orange, rate("pebble-get")},
			{"bloom-test", baselineLine, green, rate("bloom-test")},
		}},
		{"disk bytes per mark, once compacted", ticks125{plain}, []curveLine{
			{"store directory (WAL included)", storeLine, blue, field("new", disk)},
			{"store's index tables", storeLine, orange, perMark(func(m Memory) float64 { return float64(m.IndexTableBytes) })},
			{"pebble directory", baselineLine, blue, field("pebble-batch-insert", disk)},
			{"target", targetLine, gray, constant(targetDiskPerMark)},
		}},
		{"resident memory per mark", ticks125{plain}, []curveLine{
			{"store, all growth", storeLine, blue, field("new", mem)},
			{"store, beyond the block cache", storeLine, orange, func(pt CurvePoint) float64 { return pt.Memory.BeyondCachesPerMark }},
			{"store's filters", storeLine, green, perMark(func(m Memory) float64 { return float64(m.FilterBytes) })},
			{"pebble (the same block cache), all growth", baselineLine, blue, field("pebble-batch-insert", mem)},
			{"bloom/v3 filter", baselineLine, green, field("bloom-test", mem)},
			{"target beyond caches", targetLine, gray, constant(targetRSSPerMark)},
		}},
	} {
		p, err := curvePanel(c, panel.title, panel.ticks, panel.lines)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	cv, err := draw.NewFormattedCanvas(8*vg.Inch, 12*vg.Inch, strings.TrimPrefix(filepath.Ext(path), "."))
	if err != nil {
		return err
	}
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadY: vg.Points(16), PadTop: vg.Points(4), PadBottom: vg.Points(4),
		PadLeft: vg.Points(4), PadRight: vg.Points(4)}
	grid := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, draw.New(cv))
	for i, p := range panels {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = cv.WriteTo(f)
	return errors.Join(err, f.Close())
}

// curvePanel is one panel of CurveChart: a line per entry of lines, over
// the points where it is positive.
func curvePanel(c Curve, title string, yTicks plot.Ticker, lines []curveLine) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "marks in the store"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = marksTicks(c), yTicks
	if n := len(c.Points); n > 0 {
		// Room on the left for the legend, which lines would cross.
		p.X.Min, p.X.Max = float64(c.Points[0].Marks)/5, float64(c.Points[n-1].Marks)*1.5
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	for _, l := range lines {
		var xys plotter.XYs
		for _, pt := range c.Points {
			if y := l.y(pt); y > 0 {
				xys = append(xys, plotter.XY{X: float64(pt.Marks), Y: y})
			}
		}
		if len(xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = l.color, l.color
		switch l.kind {
		case storeLine:
			points.Shape = draw.CircleGlyph{}
		case baselineLine:
			line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
			points.Shape = draw.PyramidGlyph{}
		case targetLine:
			line.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
			p.Add(line)
			p.Legend.Add(l.label, line)
			continue
		}
		p.Add(line, points)
		p.Legend.Add(l.label, line, points)
	}
	return p, nil
}
