package main

import (
	"fmt"
	"image/color"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var targetColors = map[string]color.RGBA{
	"direct":  {150, 150, 150, 255},
	"fastlb":  {31, 119, 180, 255},
	"haproxy": {255, 127, 14, 255},
	"nginx":   {44, 160, 44, 255},
}

// drawChart draws requests/s, p99 latency and the proxy's CPU per request
// per scenario, in three panels from top to bottom, one bar per target,
// into a PNG. CPU is what sets the targets apart in the fixed-rate
// scenarios, where every target serves the same requests/s.
func drawChart(results []Result, path string) error {
	var scen, targets []string
	for _, r := range results {
		if r.KiBPerConn > 0 || r.Skipped != "" && r.Target == "all" {
			continue
		}
		if !slices.Contains(scen, r.Scenario) {
			scen = append(scen, r.Scenario)
		}
		if !slices.Contains(targets, r.Target) {
			targets = append(targets, r.Target)
		}
	}
	if len(scen) == 0 {
		return nil
	}
	value := func(scenario, target string, f func(Result) float64) float64 {
		for _, r := range results {
			if r.Scenario == scenario && r.Target == target && r.Skipped == "" {
				return f(r)
			}
		}
		return 0
	}
	panel := func(title, ylabel string, f func(Result) float64) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.Y.Label.Text = ylabel
		w := vg.Points(60 / float64(len(targets)+1))
		for i, t := range targets {
			vals := make(plotter.Values, len(scen))
			for j, s := range scen {
				vals[j] = value(s, t, f)
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return nil, err
			}
			bars.LineStyle.Width = 0
			bars.Color = targetColors[t]
			bars.Offset = w * vg.Length(float64(i)-float64(len(targets)-1)/2)
			p.Add(bars)
			p.Legend.Add(t, bars)
		}
		p.Legend.Top = true
		p.Y.Max *= 1.25 // room above the tallest bar for the legend
		p.NominalX(scen...)
		p.X.Tick.Label.Rotation = 0.6
		p.X.Tick.Label.XAlign = -0.9
		return p, nil
	}
	var panels []*plot.Plot
	for _, pn := range []struct {
		title, ylabel string
		f             func(Result) float64
	}{
		{"fastlb benchmark: requests per second (higher is better)", "req/s", func(r Result) float64 { return r.RPS }},
		{"p99 latency (lower is better)", "ms", func(r Result) float64 { return r.P99ms }},
		{"proxy CPU per 100,000 requests (lower is better)", "CPU s", func(r Result) float64 { return r.CPUPer100k }},
	} {
		p, err := panel(pn.title, pn.ylabel, pn.f)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	img := vgimg.New(chartWidth, vg.Length(len(panels))*panelHeight)
	for i, c := range rows(draw.New(img), len(panels)) {
		panels[i].Draw(c)
	}
	if err := savePNG(img, path); err != nil {
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return nil
}

// The chart's size: each panel is panelHeight high.
const chartWidth, panelHeight = 26 * vg.Centimeter, 12 * vg.Centimeter

// rows cuts dc into n parts of equal height, from top to bottom.
func rows(dc draw.Canvas, n int) []draw.Canvas {
	h := (dc.Max.Y - dc.Min.Y) / vg.Length(n)
	out := make([]draw.Canvas, n)
	for i := range out {
		c := dc
		c.Max.Y = dc.Max.Y - vg.Length(i)*h
		c.Min.Y = c.Max.Y - h
		out[i] = c
	}
	return out
}

func savePNG(c *vgimg.Canvas, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}
