"""bootkit-beat: periodic tasks for the reference worker."""

from bootkit_beat.schedules import Crontab, Every, crontab

__all__ = ["Crontab", "Every", "crontab"]
