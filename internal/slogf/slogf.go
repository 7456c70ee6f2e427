// Package slogf adapts a log/slog logger to the Printf logger interface
// that fasthttp's servers and clients take.
package slogf

import (
	"context"
	"fmt"
	"log/slog"
)

// Debug returns a Printf logger that sends each message to l at the debug
// level: fasthttp's own messages are mostly about connections that sent
// something unparseable, of interest only when debugging.
func Debug(l *slog.Logger) Printfer { return debugLogger{l} }

// Printfer is fasthttp's logger interface.
type Printfer interface {
	Printf(format string, args ...any)
}

type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(format string, args ...any) {
	if d.l.Enabled(context.Background(), slog.LevelDebug) {
		d.l.Debug(fmt.Sprintf(format, args...))
	}
}
