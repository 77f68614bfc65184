"""Crowd-flow forecasts (Prophet) and forecast-based early warning."""
