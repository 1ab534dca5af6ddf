"""Where images and labels come from, how they are split, and how they become inputs."""
