"""`sound-monitor calibrate`: thresholds from your own recordings.

Background recordings (hours of normal sound where the microphone is) and, optionally,
positive clips per label are replayed through the monitor's own pipeline (`replay`); the
rules are then replayed over the recorded scores at candidate thresholds (`sweep`) to find,
per label, the lowest threshold that keeps false alarms within a budget per hour, and the
share of positive clips that still produce an event there. `write` and `plots` turn the
result into a calibrated copy of the config and histograms.
"""
