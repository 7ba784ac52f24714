"""Video input and output: streaming readers and writers, and whole videos in memory."""

from gnvc.io.stream import FrameReader, FrameWriter, StreamInfo, check_output_path, open_video

__all__ = ["FrameReader", "FrameWriter", "StreamInfo", "check_output_path", "open_video"]
