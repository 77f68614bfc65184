"""Video: camera messages, video window state and camera health.

`messages` decodes the compact camera message every video source ends in (DeepStream, the CPU
detector, recorded MOT tracks) and the camera geometry (ROIs, counting lines); `headcount` keeps
people per zone over windows and each camera's health; `mot` turns MOTChallenge tracks into
camera messages. It may import the core's root, never another signal wing.
"""
