"""People counting with NVIDIA DeepStream: PeopleNet, a tracker and Gst-nvdsanalytics.

The modules follow the data: `analytics_config` writes the nvdsanalytics rules from the site file,
`adapter` (the one module that imports NVIDIA's ``pyds``) turns batch metadata into frozen
dataclasses, `messages` turns those into the shared `crowdwatch.video.messages.CameraMessage`, and
`app` wires the GStreamer pipeline inside the DeepStream container. `stock` reads what an existing
DeepStream deployment already publishes through nvmsgconv. Everything but `adapter` and `app` is
pure Python and runs without DeepStream.
"""
