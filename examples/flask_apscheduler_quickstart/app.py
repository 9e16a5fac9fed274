"""Flask-APScheduler 1.13's quick start ("Basic Application" in its documentation, with the
interval job of "Adding Jobs"), as it is, except for the import: ``flask_apscheduler`` became
``scheduler_app``, which is the whole migration."""
from flask import Flask
from scheduler_app import APScheduler

# set configuration values
class Config:
    SCHEDULER_API_ENABLED = True

# create app
app = Flask(__name__)
app.config.from_object(Config())

# initialize scheduler
scheduler = APScheduler()
# if you don't wanna use a config, you can set options here:
# scheduler.api_enabled = True
scheduler.init_app(app)


# interval example
@scheduler.task('interval', id='do_job_1', seconds=30, misfire_grace_time=900)
def job1():
    print('Job 1 executed')


scheduler.start()


if __name__ == '__main__':
    app.run()
