package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

type countingValuer struct{ calls *int }

func (v countingValuer) LogValue() slog.Value {
	*v.calls++
	return slog.StringValue("formatted")
}

func TestLazyHandlerFormatsAttributesOnlyForLoggedRecords(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(&lazyHandler{next: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})})
	calls := 0

	logger.With(slog.Any("args", countingValuer{&calls})).Debug(">>> INSERT")
	if calls != 0 || out.Len() != 0 {
		t.Fatalf("a debug record was formatted: %d LogValue calls, output %q", calls, out.String())
	}

	logger.With("component", "sqlite").WithGroup("stmt").With(slog.Any("args", countingValuer{&calls})).Info("slow")
	line := out.String()
	for _, want := range []string{"level=INFO", "msg=slow", "component=sqlite", "stmt.args=formatted"} {
		if !strings.Contains(line, want) {
			t.Errorf("logged line %q lacks %q", line, want)
		}
	}
	if calls != 1 {
		t.Errorf("LogValue called %d times, want 1", calls)
	}
}
