package adminapi

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"fastlb/config"
)

// TestOpenAPIDescribesEveryRoute: the document is valid OpenAPI 3.1, every
// route the router serves is in it with its method, and every operation
// in it is served.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid document: %v", err)
	}
	cfg := config.Defaults()
	a := New(Options{Runtime: newRuntime(filepath.Join(t.TempDir(), "c.json"), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))})

	var served []string
	for method, paths := range a.router.List() {
		for _, p := range paths {
			// The router's catch-all {profile:*} is a plain parameter
			// in OpenAPI's path templates.
			p = strings.ReplaceAll(p, ":*}", "}")
			served = append(served, method+" "+p)
		}
	}
	var described []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			described = append(described, method+" "+path)
			if op.OperationID == "" || op.Summary == "" || len(op.Responses.Map()) == 0 {
				t.Errorf("%s %s: needs an operationId, a summary and its answers", method, path)
			}
		}
	}
	slices.Sort(served)
	slices.Sort(described)
	for _, r := range served {
		if !slices.Contains(described, r) {
			t.Errorf("%s is served but not in openapi.json", r)
		}
	}
	for _, r := range described {
		if !slices.Contains(served, r) {
			t.Errorf("%s is in openapi.json but not served", r)
		}
	}
	if len(served) < 20 {
		t.Errorf("only %d routes listed: %v", len(served), served)
	}
}
