"""Camera producer: frames from folders, video, RTSP, cameras or ZeroMQ onto the frames topic."""
