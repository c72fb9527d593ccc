package bench

import (
	"errors"
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Series is one named set of bar heights, one per category. NaN (and, on a
// log axis, a value ≤ 0) draws no bar.
type Series struct {
	Name   string
	Values []float64
}

// Bars describes a grouped bar chart.
type Bars struct {
	Title      string
	XLabel     string
	YLabel     string
	Categories []string
	Series     []Series
	// Log draws the value axis in decades (the bars' heights are log10 of
	// the values, so that values spanning µs to seconds stay readable).
	Log bool
	// Format renders a value for bar labels and log-axis ticks; default
	// formatValue without a unit.
	Format func(float64) string
}

// WriteBars renders b as an SVG (or any format gonum/plot knows by the
// file's extension) at path.
func WriteBars(path string, b Bars) error {
	if len(b.Categories) == 0 || len(b.Series) == 0 {
		return errors.New("bench: a bar chart needs categories and series")
	}
	format := b.Format
	if format == nil {
		format = func(v float64) string { return formatValue(v, "") }
	}
	p := plot.New()
	p.Title.Text = b.Title
	p.X.Label.Text = b.XLabel
	p.Y.Label.Text = b.YLabel
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())

	// On a log axis bars start at the decade below the smallest value.
	base := 0.0
	if b.Log {
		lo := math.Inf(1)
		for _, s := range b.Series {
			for _, v := range s.Values {
				if v > 0 {
					lo = math.Min(lo, v)
				}
			}
		}
		if math.IsInf(lo, 1) {
			return errors.New("bench: a log bar chart needs a positive value")
		}
		// One decade below the smallest value, so that it still gets a bar
		// (an exact power of ten would otherwise have height 0).
		base = math.Floor(math.Log10(lo)) - 1
	}
	height := func(v float64) float64 {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			return 0
		case b.Log && v <= 0:
			return 0
		case b.Log:
			return math.Log10(v) - base
		}
		return v
	}

	n := len(b.Series)
	group := vg.Points(math.Min(60, 200/float64(len(b.Categories))+20))
	width := group / vg.Length(n)
	top := 0.0
	for i, s := range b.Series {
		if len(s.Values) != len(b.Categories) {
			return fmt.Errorf("bench: series %q has %d values for %d categories", s.Name, len(s.Values), len(b.Categories))
		}
		vals := make(plotter.Values, len(s.Values))
		var labels plotter.XYLabels
		for j, v := range s.Values {
			vals[j] = height(v)
			top = math.Max(top, vals[j])
			if vals[j] > 0 {
				labels.XYs = append(labels.XYs, plotter.XY{X: float64(j), Y: vals[j]})
				labels.Labels = append(labels.Labels, format(v))
			}
		}
		bc, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		bc.LineStyle.Width = 0
		bc.Color = plotutil.Color(i)
		bc.Offset = (vg.Length(i) - vg.Length(n-1)/2) * width
		p.Add(bc)
		if n > 1 {
			p.Legend.Add(s.Name, bc)
		}
		if len(labels.XYs) > 0 {
			l, err := plotter.NewLabels(labels)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			for k := range l.TextStyle {
				l.TextStyle[k].Font.Size = vg.Points(7)
				l.TextStyle[k].XAlign = draw.XCenter
			}
			l.Offset = vg.Point{X: bc.Offset, Y: vg.Points(2)}
			p.Add(l)
		}
	}
	p.NominalX(b.Categories...)
	p.X.Tick.Label.Font.Size = vg.Points(8)
	// Headroom for the bar labels and the legend.
	p.Y.Min = 0
	p.Y.Max = top * 1.15
	if n > 1 {
		p.Y.Max = top * (1.15 + 0.1*float64(n))
	}
	if top == 0 {
		p.Y.Max = 1
	}
	if b.Log {
		var ticks []plot.Tick
		for d := 0.0; d <= math.Ceil(p.Y.Max); d++ {
			ticks = append(ticks, plot.Tick{Value: d, Label: format(math.Pow(10, base+d))})
		}
		p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	}
	w := vg.Length(len(b.Categories))*(group+vg.Points(24)) + vg.Points(120)
	if w < 6*vg.Inch {
		w = 6 * vg.Inch
	}
	if err := p.Save(w, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("bench: writing %s: %w", path, err)
	}
	return nil
}

// Curve is one line of a chart.
type Curve struct {
	Name string
	X, Y []float64
}

// Lines describes a line chart, such as a CDF: each curve is drawn as
// steps (a value holds until the next point).
type Lines struct {
	Title  string
	XLabel string
	YLabel string
	Curves []Curve
	// VLines are labelled vertical markers, such as a median.
	VLines []Mark
	YMax   float64 // 0: from the data
}

// Mark is a labelled vertical line at X.
type Mark struct {
	Name string
	X    float64
}

// WriteLines renders l at path.
func WriteLines(path string, l Lines) error {
	if len(l.Curves) == 0 {
		return errors.New("bench: a line chart needs a curve")
	}
	p := plot.New()
	p.Title.Text = l.Title
	p.X.Label.Text = l.XLabel
	p.Y.Label.Text = l.YLabel
	p.Legend.TextStyle.Font.Size = vg.Points(9) // bottom right: CDFs rise on the left
	p.Add(plotter.NewGrid())
	ymax := l.YMax
	xmax := math.Inf(-1)
	for i, c := range l.Curves {
		if len(c.X) != len(c.Y) || len(c.X) == 0 {
			return fmt.Errorf("bench: curve %q has %d x and %d y values", c.Name, len(c.X), len(c.Y))
		}
		xys := make(plotter.XYs, len(c.X))
		for j := range c.X {
			xys[j] = plotter.XY{X: c.X[j], Y: c.Y[j]}
			xmax = math.Max(xmax, c.X[j])
			if l.YMax == 0 {
				ymax = math.Max(ymax, c.Y[j])
			}
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		line.StepStyle = plotter.PostStep
		p.Add(line)
		if c.Name != "" {
			p.Legend.Add(c.Name, line)
		}
	}
	for i, m := range l.VLines {
		line, err := plotter.NewLine(plotter.XYs{{X: m.X, Y: 0}, {X: m.X, Y: ymax}})
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		line.Color = color.Gray{Y: 90}
		line.Dashes = plotutil.Dashes(1 + i%3)
		p.Add(line)
		p.Legend.Add(m.Name, line)
		xmax = math.Max(xmax, m.X)
	}
	p.X.Max = xmax * 1.03
	p.Y.Min = 0
	p.Y.Max = ymax
	if err := p.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("bench: writing %s: %w", path, err)
	}
	return nil
}

// fmtMicros renders a value in µs with a fitting unit: "850 µs", "1.2 ms",
// "3.4 s".
func fmtMicros(us float64) string {
	switch {
	case math.IsNaN(us):
		return "n/a"
	case us >= 1e6:
		return formatValue(us/1e6, "s")
	case us >= 1e3:
		return formatValue(us/1e3, "ms")
	}
	return formatValue(us, "µs")
}
