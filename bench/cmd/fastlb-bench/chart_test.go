package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// TestChartPanels draws a chart of a few rows and checks the PNG: three
// panels high (requests/s, p99, CPU per request) and one wide.
func TestChartPanels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chart.png")
	results := []Result{
		{Scenario: "small-get", Target: "direct", RPS: 40, P99ms: 2},
		{Scenario: "small-get", Target: "fastlb", RPS: 30, P99ms: 3, CPUPer100k: 3},
		{Scenario: "small-get-6k-rps", Target: "fastlb", RPS: 6000, P99ms: 2, CPUPer100k: 7},
		{Scenario: "small-get-6k-rps", Target: "nginx", Skipped: "not installed"},
		{Scenario: "idle-10k-conns", Target: "fastlb", KiBPerConn: 2.7},
	}
	if err := drawChart(results, path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	dpi := vg.Length(vgimg.DefaultDPI)
	wantW, wantH := int(chartWidth/vg.Inch*dpi+0.5), int(3*panelHeight/vg.Inch*dpi+0.5)
	if cfg.Width != wantW || cfg.Height != wantH {
		t.Errorf("chart is %dx%d px, want %dx%d (three panels)", cfg.Width, cfg.Height, wantW, wantH)
	}
}

// TestRows checks that rows cuts a canvas into equal parts, top first,
// that together cover it.
func TestRows(t *testing.T) {
	dc := draw.Canvas{Rectangle: vg.Rectangle{Min: vg.Point{X: 0, Y: 10}, Max: vg.Point{X: 5, Y: 40}}}
	got := rows(dc, 3)
	want := [][2]vg.Length{{30, 40}, {20, 30}, {10, 20}}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i, c := range got {
		if c.Min.Y != want[i][0] || c.Max.Y != want[i][1] || c.Min.X != 0 || c.Max.X != 5 {
			t.Errorf("row %d: %v, want Y %v..%v over the whole width", i, c.Rectangle, want[i][0], want[i][1])
		}
	}
}
