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

// drawChart draws requests/s (top) and p99 latency (bottom) per scenario,
// one bar per target, into a PNG.
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
		p.NominalX(scen...)
		p.X.Tick.Label.Rotation = 0.6
		p.X.Tick.Label.XAlign = -0.9
		return p, nil
	}
	rps, err := panel("fastlb benchmark: requests per second (higher is better)", "req/s", func(r Result) float64 { return r.RPS })
	if err != nil {
		return err
	}
	p99, err := panel("p99 latency (lower is better)", "ms", func(r Result) float64 { return r.P99ms })
	if err != nil {
		return err
	}
	const width, height = 26 * vg.Centimeter, 12 * vg.Centimeter
	img := vgimg.New(width, 2*height)
	top, bottom := splitCanvas(draw.New(img), height)
	rps.Draw(top)
	p99.Draw(bottom)
	if err := savePNG(img, path); err != nil {
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return nil
}

// splitCanvas cuts dc into a top and a bottom part, the bottom h high.
func splitCanvas(dc draw.Canvas, h vg.Length) (top, bottom draw.Canvas) {
	top, bottom = dc, dc
	bottom.Max.Y = dc.Min.Y + h
	top.Min.Y = dc.Min.Y + h
	return top, bottom
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
