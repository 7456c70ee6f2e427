package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestCombine checks how a target's rounds make its row: medians of the
// rates, latencies and CPU, sums of requests and errors, the largest peak
// RSS, the first error, and each round's own figures in the order they ran.
func TestCombine(t *testing.T) {
	r1 := Result{Requests: 100, RPS: 30, P50ms: 1, P99ms: 9, P999ms: 20, CPUPer100k: 5, PeakRSSMiB: 12}
	r2 := Result{Requests: 200, Errors: 2, FirstError: "status 502", RPS: 10, P50ms: 3, P99ms: 7, P999ms: 10, CPUPer100k: 4, PeakRSSMiB: 15}
	r3 := Result{Requests: 300, Errors: 1, FirstError: "timeout", RPS: 20, P50ms: 2, P99ms: 8, P999ms: 30, CPUPer100k: 6, PeakRSSMiB: 14}
	r4 := Result{Requests: 400, RPS: 40, P50ms: 4, P99ms: 6, P999ms: 40, CPUPer100k: 7, PeakRSSMiB: 11}
	for _, tc := range []struct {
		name   string
		rounds []Result
		want   Result
	}{
		{"one round is the row as it is", []Result{r2}, r2},
		{"odd: the middle value", []Result{r1, r2, r3}, Result{
			Requests: 600, Errors: 3, FirstError: "status 502", RPS: 20, P50ms: 2, P99ms: 8, P999ms: 20, CPUPer100k: 5, PeakRSSMiB: 15,
			Rounds: []Round{{RPS: 30, P99ms: 9, CPUPer100k: 5}, {RPS: 10, P99ms: 7, CPUPer100k: 4, Errors: 2}, {RPS: 20, P99ms: 8, CPUPer100k: 6, Errors: 1}},
		}},
		{"even: the mean of the middle two", []Result{r4, r3, r2, r1}, Result{
			Requests: 1000, Errors: 3, FirstError: "timeout", RPS: 25, P50ms: 2.5, P99ms: 7.5, P999ms: 25, CPUPer100k: 5.5, PeakRSSMiB: 15,
			Rounds: []Round{{RPS: 40, P99ms: 6, CPUPer100k: 7}, {RPS: 20, P99ms: 8, CPUPer100k: 6, Errors: 1}, {RPS: 10, P99ms: 7, CPUPer100k: 4, Errors: 2}, {RPS: 30, P99ms: 9, CPUPer100k: 5}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := combine(tc.rounds); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("combine:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestRoundsInJSON checks that the rounds reach the results file, and that
// a row made of one round does not repeat it.
func TestRoundsInJSON(t *testing.T) {
	row := combine([]Result{{RPS: 10, P99ms: 2, CPUPer100k: 3}, {RPS: 12, P99ms: 1, Errors: 1}})
	data, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"rounds":[{"rps":10,"p99_ms":2,"cpu_seconds_per_100k":3,"errors":0},{"rps":12,"p99_ms":1,"errors":1}]`; !strings.Contains(string(data), want) {
		t.Errorf("JSON %s\nlacks %s", data, want)
	}
	single, _ := json.Marshal(combine([]Result{{RPS: 10}}))
	if strings.Contains(string(single), "rounds") {
		t.Errorf("a one-round row repeats its round: %s", single)
	}
}

// TestCompare checks the ratios of a scenario's rows: requests/s against
// direct and HAProxy, CPU per request against HAProxy, none against a
// target that was skipped or is missing, and none where a figure is 0.
func TestCompare(t *testing.T) {
	direct := Result{Target: "direct", RPS: 40}
	fastlb := Result{Target: "fastlb", RPS: 30, CPUPer100k: 3}
	haproxy := Result{Target: "haproxy", RPS: 20, CPUPer100k: 4}
	nginx := Result{Target: "nginx", RPS: 10, CPUPer100k: 8}
	skipped := Result{Target: "haproxy", Skipped: "not installed"}
	for _, tc := range []struct {
		name string
		in   []Result
		want []Result
	}{
		{"every target", []Result{direct, fastlb, haproxy, nginx}, []Result{
			direct,
			{Target: "fastlb", RPS: 30, CPUPer100k: 3, VsDirect: 0.75, VsHAProxy: 1.5, CPUVsHAProxy: 0.75},
			{Target: "haproxy", RPS: 20, CPUPer100k: 4, VsDirect: 0.5},
			{Target: "nginx", RPS: 10, CPUPer100k: 8, VsDirect: 0.25, VsHAProxy: 0.5, CPUVsHAProxy: 2},
		}},
		{"HAProxy not installed", []Result{direct, fastlb, skipped}, []Result{
			direct,
			{Target: "fastlb", RPS: 30, CPUPer100k: 3, VsDirect: 0.75},
			skipped,
		}},
		{"no direct target", []Result{fastlb, haproxy}, []Result{
			{Target: "fastlb", RPS: 30, CPUPer100k: 3, VsHAProxy: 1.5, CPUVsHAProxy: 0.75},
			{Target: "haproxy", RPS: 20, CPUPer100k: 4},
		}},
		{"zero figures give no ratio", []Result{{Target: "fastlb", KiBPerConn: 2.7}, {Target: "haproxy", KiBPerConn: 0.9}}, []Result{
			{Target: "fastlb", KiBPerConn: 2.7},
			{Target: "haproxy", KiBPerConn: 0.9},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slices.Clone(tc.in)
			compare(got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("compare:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestMarkdownCPURatio checks the table's CPU column: the ratio where there
// is one, "-" where there is none, and a skipped row as wide as the rest.
func TestMarkdownCPURatio(t *testing.T) {
	md := markdown([]Result{
		{Scenario: "s", Target: "fastlb", RPS: 30, CPUPer100k: 3, VsHAProxy: 1.5, CPUVsHAProxy: 0.75},
		{Scenario: "s", Target: "haproxy", RPS: 20, CPUPer100k: 4},
		{Scenario: "s", Target: "nginx", Skipped: "not installed"},
	})
	lines := strings.Split(strings.TrimSpace(md), "\n")
	if len(lines) != 5 {
		t.Fatalf("table of %d lines:\n%s", len(lines), md)
	}
	if !strings.HasSuffix(lines[0], "| vs HAProxy | CPU vs HAProxy |") {
		t.Errorf("header %q lacks the CPU column", lines[0])
	}
	for i, suffix := range []string{"| 1.50 | 0.75 |", "| - | - |"} {
		if !strings.HasSuffix(lines[2+i], suffix) {
			t.Errorf("row %q does not end %q", lines[2+i], suffix)
		}
	}
	for _, l := range lines {
		if n := strings.Count(l, "|"); n != 14 {
			t.Errorf("row %q has %d cells, want 13", l, n-1)
		}
	}
}

// fastlb is measured with the environment its systemd unit gives it.
func TestUnitEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.service")
	os.WriteFile(path, []byte("[Service]\n# Environment=IGNORED=1\nEnvironment=A=1 B=2\n  Environment=C=3\nExecStart=/bin/true\n"), 0o600)
	env, err := unitEnvironment(path)
	if err != nil || strings.Join(env, " ") != "A=1 B=2 C=3" {
		t.Errorf("unitEnvironment = %q, %v", env, err)
	}
	env, err = unitEnvironment("../../../deploy/fastlb.service")
	if err != nil || !slices.Contains(env, "GODEBUG=schedtrace=2147483647") {
		t.Errorf("the shipped unit's environment: %q, %v", env, err)
	}
}
