package raftgroup

import (
	"bytes"
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// raftLogger returns an hclog.Logger for hashicorp/raft that forwards its lines to logger.
// Raft logs a great deal at info level (every election of every group); those go to debug,
// warnings and errors keep their level.
func raftLogger(logger *slog.Logger, group int) hclog.Logger {
	if !logger.Enabled(context.Background(), slog.LevelWarn) {
		return hclog.NewNullLogger()
	}
	level := hclog.Warn
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            "raft",
		Level:           level,
		Output:          &slogWriter{logger: logger.With("partition", group)},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

// slogWriter turns hclog's formatted lines into slog records.
type slogWriter struct{ logger *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(bytes.TrimRight(p, "\n")))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERROR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	}
	w.logger.Log(context.Background(), level, line)
	return len(p), nil
}
