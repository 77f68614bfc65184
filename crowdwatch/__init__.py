"""crowdwatch: crowd-safety analytics over gate, video and emergency-call streams."""
